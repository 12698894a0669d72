"""The lab: every experiment of the paper — the figures and the theory — as specs of one framework: a runner that
writes results to files, and reports from them.

Modules, in the order data flows: :mod:`~adamlab.lab.spec` (an experiment as data: panels of training runs and
tasks), :mod:`~adamlab.lab.datasets` (training sets by name), :mod:`~adamlab.lab.models` (models and objectives
by name), :mod:`~adamlab.lab.runner` (units of work, workers, shards, locks, devices, grid search, resume),
:mod:`~adamlab.lab.results` (the files), :mod:`~adamlab.lab.claims` (the rules that turn several seeds' curves
into verdicts with intervals), :mod:`~adamlab.lab.report` (plots, report.md, README blocks),
:mod:`~adamlab.lab.status` (progress and time estimates), and :mod:`~adamlab.lab.experiments` (the registry
behind ``adamlab reproduce``). See docs/lab.md.
"""
