"""One registry of optimizers × options, shared by every optimizer test (as torch.optim's own tests do)."""

from __future__ import annotations

import itertools

import adamlab
import adamlab.numpy as anp

ADAM_OPTIONS: list[dict] = [
    {},
    {"bias_correction": False},
    {"eps_mode": "hat"},
    {"eps_mode": "hat", "bias_correction": False},
    {"weight_decay": 0.05},
    {"weight_decay": 0.05, "decoupled_weight_decay": True},
    {"amsgrad": True},
    {"amsgrad": True, "bias_correction": False},
    {"amsgrad": True, "eps_mode": "hat"},
    {"lr_decay": "sqrt"},
    {"beta1_decay": 0.98},
    {"lr_decay": "sqrt", "beta1_decay": 0.99, "betas": (0.8, 0.99)},
    {"maximize": True},
    {"averaging": True},
    {"averaging": True, "averaging_beta": 0.9, "amsgrad": True},
    {"eps": 0.0, "betas": (0.0, 0.99)},
    # everything at once
    {
        "amsgrad": True,
        "weight_decay": 0.01,
        "decoupled_weight_decay": True,
        "lr_decay": "sqrt",
        "beta1_decay": 0.99,
        "maximize": True,
        "averaging": True,
        "eps_mode": "hat",
    },
]

ADAMAX_OPTIONS: list[dict] = [
    {},
    {"eps": 1e-8},
    {"bias_correction": False},
    {"weight_decay": 0.05},
    {"weight_decay": 0.05, "decoupled_weight_decay": True},
    {"lr_decay": "sqrt", "beta1_decay": 0.98},
    {"maximize": True},
    {"averaging": True},
    {"averaging": True, "averaging_beta": 0.95, "weight_decay": 0.01, "maximize": True, "lr_decay": "sqrt"},
]

# (name, torch class, numpy class, options)
CASES = [("Adam", adamlab.Adam, anp.Adam, o) for o in ADAM_OPTIONS] + [
    ("AdaMax", adamlab.AdaMax, anp.AdaMax, o) for o in ADAMAX_OPTIONS
]
IMPLS = ("reference", "foreach", "fused")


def case_id(case) -> str:
    name, _, _, opts = case
    return name + "[" + ",".join(f"{k}={v}" for k, v in opts.items()) + "]"


def cases_with_impls():
    return [(c, impl) for c, impl in itertools.product(CASES, IMPLS)]
