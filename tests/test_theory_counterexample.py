"""Reddi, Kale & Kumar's counterexample to §4's proof, and the §5 limit Adam → AdaGrad."""

import math

import numpy as np
import pytest

from adamlab.numpy import Adam
from adamlab.theory import AdaGrad, reddi_counterexample, run_online, sparse_logistic, theorem41_bound

C, T = 3.0, 3000
BETA2 = 1.0 / (1.0 + C * C)  # 0.1


def _adam(**kw):
    return Adam(lr=1.0, betas=(0.0, BETA2), eps=0.0, lr_decay="sqrt", **kw)


@pytest.fixture(scope="module")
def runs():
    P = reddi_counterexample(T, C)
    opts = {
        "Adam": _adam(),
        "AMSGrad": _adam(amsgrad=True, bias_correction=False),
        "AdaGrad": AdaGrad(lr=1.0),
    }
    return {k: (o, run_online(P, o, checkpoints=[300, T], record_gamma=True)) for k, o in opts.items()}


def test_adam_drifts_to_plus_one_and_its_average_regret_does_not_vanish(runs):
    _, r = runs["Adam"]
    assert r.x_final[0] > 0.9  # θ* = −1
    # sitting at +1 costs 2(C − 2)/3 per step
    assert r.average_regret[-1] > 0.6
    assert r.average_regret[-1] > 0.9 * r.average_regret[0]  # from T = 300 to 3000: not decaying


@pytest.mark.parametrize("name", ["AMSGrad", "AdaGrad"])
def test_amsgrad_and_adagrad_go_to_minus_one(runs, name):
    _, r = runs[name]
    assert r.x_final[0] < -0.9
    assert r.average_regret[-1] < 0.1
    assert r.average_regret[-1] < 0.5 * r.average_regret[0]  # R(T)/T → 0
    assert r.violations[0] == 0  # √v̂_t/α_t never decreases


def test_the_proofs_assumption_fails_for_adam_at_t_2(runs):
    opt, r = runs["Adam"]
    # by hand: v1 = 0.9·9, v̂1 = 9 → √v̂1/α1 = 3; v2 = 0.1·8.1 + 0.9·1 = 1.71, v̂2 = 1.71/0.99 → √v̂2·√2 < 3
    gamma2 = math.sqrt(1.71 / (1 - 0.1**2)) * math.sqrt(2.0) / opt.lr - 3.0 / opt.lr
    assert gamma2 < 0
    assert r.gamma[1, 0] == pytest.approx(gamma2)
    assert r.first_violation[0] == 2
    bad = np.flatnonzero(r.gamma[:, 0] < 0) + 1
    assert set((bad % 3).tolist()) == {0, 2}  # after each C-step the moving average falls


def test_adams_measured_regret_exceeds_theorem_4_1(runs):
    """All preconditions hold here (β1 = 0, γ = 0, α/√t, ε = 0), yet R(T) exceeds the bound: the proof is wrong."""
    opt, r = runs["Adam"]
    bound = theorem41_bound(r, opt)[-1]
    assert r.regret[-1] > bound.total


def test_section5_limit_gap_shrinks_as_beta2_goes_to_one():
    P = sparse_logistic(150, 8, active=3, seed=5)
    ada = run_online(P, AdaGrad(lr=0.3), checkpoints=[150], record_trajectory=True)
    gaps = {}
    for bc in (True, False):
        for omb in (1e-2, 1e-4, 1e-6):
            opt = Adam(lr=0.3, betas=(0.0, 1 - omb), eps=0.0, lr_decay="sqrt", bias_correction=bc)
            run = run_online(P, opt, checkpoints=[150], record_trajectory=True)
            gaps[bc, omb] = np.abs(run.trajectory - ada.trajectory).max()
    assert gaps[True, 1e-4] < gaps[True, 1e-2] / 20
    assert gaps[True, 1e-6] < gaps[True, 1e-4] / 20
    assert gaps[True, 1e-6] < 1e-4
    assert gaps[False, 1e-6] > 0.1  # §5 needs the bias correction
