"""Call the fused C kernel for a list of CPU tensors of one dtype (see ``adam_kernels.c``).

The caller (``adamlab.optim.base``) has checked that every tensor is a dense, contiguous CPU tensor of one
floating dtype (float32 or float64) and that each step counter is a float32 CPU scalar tensor.
"""

from __future__ import annotations

from array import array

import torch

from adamlab.kernels.build import load

FLAG_MAXIMIZE = 1
FLAG_DECOUPLED = 2
FLAG_BIAS_CORRECTION = 4
FLAG_EPS_HAT = 8
FLAG_LR_SQRT = 16
FLAG_AMSGRAD = 32
FLAG_AVERAGING = 64
FLAG_BETA1_DECAY = 128

FUSED_DTYPES = (torch.float32, torch.float64)


def group_flags(group: dict) -> int:
    """The kernel's option bits for one param group."""
    flags = 0
    if group["maximize"]:
        flags |= FLAG_MAXIMIZE
    if group["decoupled_weight_decay"]:
        flags |= FLAG_DECOUPLED
    if group["bias_correction"]:
        flags |= FLAG_BIAS_CORRECTION
    if group.get("eps_mode", "paper") == "hat":
        flags |= FLAG_EPS_HAT
    if group["lr_decay"] == "sqrt":
        flags |= FLAG_LR_SQRT
    if group.get("amsgrad", False):
        flags |= FLAG_AMSGRAD
    if group["averaging"]:
        flags |= FLAG_AVERAGING
    if group["beta1_decay"] is not None:
        flags |= FLAG_BETA1_DECAY
    return flags


def group_hyperparameters(group: dict) -> array:
    """lr, β1, β2, ε, weight decay, λ (β1 decay), averaging β: the kernel's HP_* order."""
    beta1, beta2 = group["betas"]
    lam = group["beta1_decay"]
    avg_beta = group["averaging_beta"]
    return array(
        "d",
        (
            group["lr"],
            beta1,
            beta2,
            group["eps"],
            group["weight_decay"],
            1.0 if lam is None else lam,
            beta2 if avg_beta is None else avg_beta,
        ),
    )


def _address(a: array | None) -> int | None:
    return a.buffer_info()[0] if a is not None else None


def _pointers(tensors: list[torch.Tensor] | None) -> array | None:
    # array.array rather than numpy: building it and taking its address costs a few hundred ns, which
    # matters at small sizes (the per-step overhead is what the 1e5 benchmark measures).
    return array("Q", [t.data_ptr() for t in tensors]) if tensors is not None else None


def fused_step(
    algorithm: str,
    group: dict,
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    first: list[torch.Tensor],
    second: list[torch.Tensor],
    second_max: list[torch.Tensor] | None,
    averages: list[torch.Tensor] | None,
    steps: list[torch.Tensor],
) -> array:
    """One fused step of ``algorithm`` ("adam" or "adamax") for tensors of one dtype.

    ``second`` is v (Adam) or u (AdaMax); ``second_max`` is AMSGrad's v_max or None. Returns the number of
    non-finite gradient entries per tensor (their coordinates were left unchanged).
    """
    lib = load()
    n = len(params)
    is_double = int(params[0].dtype == torch.float64)
    numel = array("q", [p.numel() for p in params])
    nonfinite = array("q", bytes(8 * n))
    hp = group_hyperparameters(group)
    flags = group_flags(group)
    arrays = [_pointers(x) for x in (params, grads, first, second, second_max, averages, steps)]
    addresses = [_address(a) for a in arrays]
    nthreads = torch.get_num_threads()
    if algorithm == "adam":
        lib.adamlab_adam_step(
            is_double, n, _address(numel), *addresses, _address(hp), flags, nthreads, _address(nonfinite)
        )
    else:
        del addresses[4]  # AdaMax has no v_max
        lib.adamlab_adamax_step(
            is_double, n, _address(numel), *addresses, _address(hp), flags, nthreads, _address(nonfinite)
        )
    return nonfinite


def roofline(p: torch.Tensor, g: torch.Tensor, m: torch.Tensor, v: torch.Tensor, nthreads: int) -> None:
    """Adam's memory pattern with trivial arithmetic over four float32 tensors: the speed limit."""
    load().adamlab_roofline(p.numel(), p.data_ptr(), g.data_ptr(), m.data_ptr(), v.data_ptr(), nthreads)
