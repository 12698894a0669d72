"""Comparison optimisers of the lab that are not part of the Adam core.

- :class:`SFO` — the sum-of-functions optimizer of Sohl-Dickstein, Poole & Ganguli (ICML 2014), written from
  the paper's description (Adam paper §6.2 / Figure 2b compares Adam with it). NumPy, float64.
- :func:`module_objective` — the adapter that turns a torch model, a loss and a list of minibatches into
  SFO's ``f_df(theta, ref) -> (loss, grad)``.
"""

from adamlab.baselines.sfo import SFO
from adamlab.baselines.sfo_torch import ModuleObjective, module_objective

__all__ = ["SFO", "ModuleObjective", "module_objective"]
