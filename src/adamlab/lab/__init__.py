"""The lab: the paper's experiments as specs, a runner that writes results to files, and reports from them.

Modules, in the order data flows: :mod:`~adamlab.lab.spec` (an experiment as data),
:mod:`~adamlab.lab.datasets` (training sets by name), :mod:`~adamlab.lab.models` (logistic regression, MLP,
the loss), :mod:`~adamlab.lab.runner` (training, grid search, resume), :mod:`~adamlab.lab.results` (the files),
:mod:`~adamlab.lab.claims` and :mod:`~adamlab.lab.report` (verdicts, plots, report.md), and
:mod:`~adamlab.lab.experiments` (the registry behind ``adamlab reproduce``). See docs/lab.md.
"""
