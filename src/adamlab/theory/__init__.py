"""The convergence theory of Kingma & Ba (2015), §4–§5, as a library: online convex optimisation.

* :mod:`~adamlab.theory.problems` — sequences of convex losses f_t on a feasible set X (linear losses with
  Reddi, Kale & Kumar's counterexamples; sparse online logistic regression); :mod:`~adamlab.theory.feasible`
  — boxes and balls with their projections Π_X.
* :mod:`~adamlab.theory.regret` — a runner that plays any adamlab optimizer (or the baselines of
  :mod:`~adamlab.theory.baselines`: AdaGrad, projected SGD) with projection and records
  R(T) = Σ_t f_t(θ_t) − min_{θ∈X} Σ_t f_t(θ).
* :mod:`~adamlab.theory.bound` — Theorem 4.1's right-hand side from a run, term by term, with its preconditions.
* ``adamlab reproduce theory`` is a lab experiment built on this library: :mod:`adamlab.lab.experiments.theory`.

>>> import numpy as np
>>> from adamlab.numpy import Adam
>>> from adamlab.theory import reddi_counterexample, run_online
>>> adam = Adam(lr=1.0, betas=(0.0, 0.1), eps=0.0, lr_decay="sqrt")
>>> run = run_online(reddi_counterexample(3000, C=3.0), adam)
>>> round(float(run.x_final[0]), 1), round(float(run.average_regret[-1]), 1)   # θ* = −1
(1.0, 0.7)
"""

from adamlab.theory.baselines import AdaGrad, OnlineGradientDescent
from adamlab.theory.bound import Theorem41Bound, check_preconditions, theorem41_bound, theorem41_rhs
from adamlab.theory.feasible import Ball, Box, FeasibleSet
from adamlab.theory.problems import (
    LinearProblem,
    OnlineProblem,
    SparseLogisticProblem,
    periodic_linear,
    reddi_counterexample,
    reddi_periodic,
    reddi_stochastic,
    sparse_logistic,
    stack_linear,
)
from adamlab.theory.regret import OnlineRun, inverse_step, log_checkpoints, regret_of_points, run_online

__all__ = [
    "AdaGrad",
    "Ball",
    "Box",
    "FeasibleSet",
    "LinearProblem",
    "OnlineGradientDescent",
    "OnlineProblem",
    "OnlineRun",
    "SparseLogisticProblem",
    "Theorem41Bound",
    "check_preconditions",
    "inverse_step",
    "log_checkpoints",
    "periodic_linear",
    "reddi_counterexample",
    "reddi_periodic",
    "reddi_stochastic",
    "regret_of_points",
    "run_online",
    "sparse_logistic",
    "stack_linear",
    "theorem41_bound",
    "theorem41_rhs",
]
