"""One frozen, validated hyper-parameter type per algorithm: :class:`AdamHyperparameters` and
:class:`AdaMaxHyperparameters`.

Every path of adamlab takes its options from here: the torch optimizers (``adamlab.Adam``/``AdaMax`` build one
per param group and step), the functional API (``adamlab.functional``), the NumPy oracle (``adamlab.numpy``)
and the fused kernel (:meth:`kernel_array` and :attr:`flags` pack its ``hp``/``flags`` arguments). Each option
is declared once, as a field with its default, its check and, where the C kernel implements it, its flag bit
or array slot. ``check_kernel_source`` compares the kernel's ``FLAG_*`` and ``HP_*`` names in
``kernels/adam_kernels.c`` with these tables, so C, C++ and Python cannot drift apart silently.

Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015: §2 (Algorithm 1), §3 (bias correction),
§4 (the convergence theory's α/√t and β1,t = β1·λ^(t−1)), §7.1 (AdaMax, Algorithm 2), §7.2 (averaging).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from adamlab import formulas as F
from adamlab.validation import as_beta_pair, as_real, check_choice, check_interval

#: The fused kernel's option bits, in the names of ``FLAG_*`` in adam_kernels.c: (flag, field, predicate).
KERNEL_FLAGS: tuple[tuple[str, str, Any], ...] = (
    ("MAXIMIZE", "maximize", bool),
    ("DECOUPLED", "decoupled_weight_decay", bool),
    ("BIAS_CORRECTION", "bias_correction", bool),
    ("EPS_HAT", "eps_mode", lambda v: v == "hat"),
    ("LR_SQRT", "lr_decay", lambda v: v == "sqrt"),
    ("AMSGRAD", "amsgrad", bool),
    ("AVERAGING", "averaging", bool),
    ("BETA1_DECAY", "beta1_decay", lambda v: v is not None),
)
#: The values of ``state_precision`` (``adamlab.numpy.quantised`` defines the formats), the quantised ones, the
#: default int8 block size (elements per absmax scale) and the fewest elements a tensor needs for quantised
#: state (smaller ones keep fp32 state: the scales and the second loop would cost more than they save).
STATE_PRECISIONS = ("fp32", "bf16", "int8")
QUANTISED = ("bf16", "int8")
DEFAULT_BLOCK_SIZE = 256
MIN_QUANTISED_NUMEL = 4096
#: The kernel's ``hp`` array, in the order of the ``HP_*`` enum of adam_kernels.c.
KERNEL_ARRAY = ("LR", "BETA1", "BETA2", "EPS", "WD", "BETA1_DECAY", "AVG_BETA")
FLAG_BITS = {name: 1 << i for i, (name, _, _) in enumerate(KERNEL_FLAGS)}


def option(default: Any, doc: str, *, kernel: bool = True, state: bool = False) -> Any:
    """A field of a hyper-parameter type. ``kernel=False``: the fused kernel does not implement the option yet,
    so a group that sets it away from its default takes the torch paths (reference or foreach).
    ``state=True``: an option of the optimizer state's format (``state_precision`` and its companions), not a
    flag of the fp32 kernel: it decides per tensor which state (and so which step) a parameter gets
    (``adamlab.optim.quantised``), and does not take a group off the fused kernel."""
    return field(default=default, metadata={"doc": doc, "kernel": kernel, "state": state})


@dataclass(frozen=True)
class _Shared:
    """The options Adam and AdaMax share (documented on each class)."""

    lr: float = option(1e-3, "α ≥ 0, the step size (a number or a one-element tensor)")
    betas: tuple[float, float] = option((0.9, 0.999), "(β1, β2), each in [0, 1)")
    eps: float = option(1e-8, "ε ≥ 0")
    weight_decay: float = option(0.0, "λ_wd ≥ 0: L2 (added to g) or, decoupled, AdamW's")
    maximize: bool = option(False, "ascend the objective (g ← −g)")
    decoupled_weight_decay: bool = option(False, "AdamW: θ ← θ − α_t·λ_wd·θ before the step")
    bias_correction: bool = option(True, "divide by 1 − β^t (§3); False is RMSProp with momentum")
    lr_decay: str | None = option(None, 'None or "sqrt" (α_t = α/√t, §4)')
    beta1_decay: float | None = option(None, "λ in (0, 1] or None: β1,t = β1·λ^(t−1) (§4)")
    averaging: bool = option(False, "keep the temporal average θ̄ (§7.2), state 'param_avg'")
    averaging_beta: float | None = option(None, "β̄ in [0, 1) of the average; None: β2 (§7.2)")
    state_precision: str = option(
        "fp32",
        '"fp32", "bf16" (stochastic rounding) or "int8" (blockwise absmax): how m and v (u) are stored for '
        "float32 parameters of at least 4096 elements (docs/quantised-state.md)",
        state=True,
    )
    state_seed: int = option(0, "seed in [0, 2³²) of bf16 state's stochastic rounding", state=True)
    state_block_size: int = option(
        DEFAULT_BLOCK_SIZE, "elements per absmax scale of int8 state: a multiple of 64", state=True
    )

    algorithm: ClassVar[str]
    #: State keys, as torch.optim names them: first moment, second moment (v or u).
    moment_keys: ClassVar[tuple[str, str]]

    def __post_init__(self) -> None:
        put = object.__setattr__  # frozen: normalise once, here
        put(self, "lr", check_interval("lr", as_real("lr", self.lr), low=0.0))
        put(self, "betas", as_beta_pair(self.betas))
        put(self, "eps", check_interval("eps", as_real("eps", self.eps), low=0.0))
        put(self, "weight_decay", check_interval("weight_decay", as_real("weight_decay", self.weight_decay), low=0.0))
        check_choice("lr_decay", self.lr_decay, F.LR_DECAYS)
        if self.beta1_decay is not None:
            lam = as_real("beta1_decay", self.beta1_decay)
            put(self, "beta1_decay", check_interval("beta1_decay (λ)", lam, low=0.0, high=1.0, open_low=True))
        if self.averaging_beta is not None:
            ab = as_real("averaging_beta", self.averaging_beta)
            put(self, "averaging_beta", check_interval("averaging_beta", ab, low=0.0, high=1.0, open_high=True))
        for name in ("maximize", "decoupled_weight_decay", "bias_correction", "averaging", "amsgrad"):
            if hasattr(self, name):
                put(self, name, bool(getattr(self, name)))
        self._check_state_format()

    def _check_state_format(self) -> None:
        """``state_precision`` and its companions: the allowed values, and no amsgrad or averaging with
        quantised state (not offered: their extra state would stay fp32 and the kernel has no such loop)."""
        check_choice("state_precision", self.state_precision, STATE_PRECISIONS)
        for name, low, high, multiple in (("state_seed", 0, 2**32 - 1, 1), ("state_block_size", 64, 2**24, 64)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high or value % multiple:
                allowed = f"an integer in [{low}, {high}]" + (f", a multiple of {multiple}" if multiple > 1 else "")
                raise ValueError(f"{name} must be {allowed}, got {value!r}")
        if self.state_precision != "fp32":
            used = [name for name in ("amsgrad", "averaging") if getattr(self, name, False)]
            if used:
                raise ValueError(
                    f"state_precision={self.state_precision!r} cannot be combined with {used[0]}=True (not offered: "
                    'its extra state would stay fp32); use state_precision="fp32" or drop it'
                )

    @property
    def quantised(self) -> bool:
        """Whether state_precision stores m and v (u) in fewer than 32 bits (bf16 or int8)."""
        return self.state_precision != "fp32"

    # -------------------------------------------------------------- building

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return _option_names(cls)  # type: ignore[arg-type]

    @classmethod
    def from_group(cls, group: dict[str, Any]) -> Any:
        """The hyper-parameters of a torch param group (its keys that name an option)."""
        return cls(**{name: group[name] for name in cls.option_names() if name in group})

    @classmethod
    def check_options(cls, options: dict[str, Any], where: str) -> None:
        """Raise TypeError naming an unknown keyword argument and the allowed ones."""
        unknown = sorted(set(options) - set(cls.option_names()))
        if unknown:
            raise TypeError(
                f"{where} got an unexpected keyword argument {unknown[0]!r}; its options are "
                + ", ".join(cls.option_names())
            )

    # -------------------------------------------------------------- derived values (formulas.py derives them)

    @property
    def beta1(self) -> float:
        return self.betas[0]

    @property
    def beta2(self) -> float:
        return self.betas[1]

    @property
    def average_beta(self) -> float:
        """β̄ of the temporal average (§7.2): ``averaging_beta``, else β2."""
        return F.averaging_beta(self.beta2, self.averaging_beta)

    @functools.cached_property
    def state_keys(self) -> tuple[str, ...]:
        """The state tensors a parameter carries besides ``step``."""
        keys = list(self.moment_keys)
        if getattr(self, "amsgrad", False):
            keys.append("max_exp_avg_sq")
        if self.averaging:
            keys.append("param_avg")
        return tuple(keys)

    # -------------------------------------------------------------- the fused kernel's view

    @functools.cached_property
    def in_kernel(self) -> bool:
        """Whether the fused kernel implements every option set here (see ``option(kernel=False)``)."""
        return all(
            f.metadata.get("kernel", True) or f.metadata.get("state") or getattr(self, f.name) == f.default
            for f in dataclasses.fields(self)
        )

    @functools.cached_property
    def flags(self) -> int:
        """The kernel's option bits (``FLAG_*`` of adam_kernels.c)."""
        bits = 0
        for name, option, predicate in KERNEL_FLAGS:
            if predicate(getattr(self, option, False)):
                bits |= FLAG_BITS[name]
        return bits

    def kernel_array(self) -> array:
        """The kernel's ``hp`` argument: float64 values in the order of ``HP_*`` (see :data:`KERNEL_ARRAY`).
        Built once per hyper-parameter object (the kernel only reads it)."""
        return self._kernel_array

    @functools.cached_property
    def _kernel_array(self) -> array:
        lam = 1.0 if self.beta1_decay is None else self.beta1_decay
        return array("d", (self.lr, self.beta1, self.beta2, self.eps, self.weight_decay, lam, self.average_beta))


@dataclass(frozen=True)
class AdamHyperparameters(_Shared):
    """Adam's options (Algorithm 1 and its variants; see :class:`adamlab.Adam` for the update in full).

    >>> hp = AdamHyperparameters(lr=1e-2, amsgrad=True)
    >>> hp.state_keys
    ('exp_avg', 'exp_avg_sq', 'max_exp_avg_sq')
    """

    amsgrad: bool = option(False, "use the running maximum of v (state 'max_exp_avg_sq')")
    eps_mode: str = option("paper", '"paper" (Algorithm 1) or "hat" (ε̂ of the efficient form, end of §2)')

    algorithm: ClassVar[str] = "adam"
    moment_keys: ClassVar[tuple[str, str]] = ("exp_avg", "exp_avg_sq")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("eps_mode", self.eps_mode, F.EPS_MODES)


@dataclass(frozen=True)
class AdaMaxHyperparameters(_Shared):
    """AdaMax's options (Algorithm 2, §7.1). The paper has no ε: the default is 0 (torch.optim.Adamax: 1e-8).

    >>> AdaMaxHyperparameters().lr, AdaMaxHyperparameters().eps
    (0.002, 0.0)
    """

    lr: float = option(2e-3, "α ≥ 0, the step size (the paper's 0.002)")
    eps: float = option(0.0, "ε ≥ 0, added inside the max as torch.optim.Adamax adds it")

    algorithm: ClassVar[str] = "adamax"
    moment_keys: ClassVar[tuple[str, str]] = ("exp_avg", "exp_inf")


Hyperparameters = AdamHyperparameters | AdaMaxHyperparameters


@functools.cache
def _option_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def check_kernel_source(source: str | Path | None = None) -> None:
    """Raise RuntimeError unless the kernel's ``FLAG_*`` bits and ``HP_*`` order (adam_kernels.c) are this
    module's :data:`KERNEL_FLAGS` and :data:`KERNEL_ARRAY`."""
    path = Path(source) if source is not None else Path(__file__).with_name("kernels") / "adam_kernels.c"
    text = path.read_text()
    flags = {m[1]: int(m[2]) for m in re.finditer(r"#define FLAG_(\w+) (\d+)", text)}
    if flags != FLAG_BITS:
        raise RuntimeError(f"the kernel's FLAG_* bits {flags} differ from adamlab.hyperparameters' {FLAG_BITS}")
    enum = re.search(r"enum\s*\{\s*(HP_\w+(?:\s*,\s*HP_\w+)*)\s*,?\s*\}", text)
    names = tuple(n.strip()[3:] for n in enum[1].split(",")) if enum else ()
    if names != (*KERNEL_ARRAY, "COUNT"):
        raise RuntimeError(f"the kernel's HP_* order {names} differs from adamlab.hyperparameters' {KERNEL_ARRAY}")


__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "FLAG_BITS",
    "KERNEL_ARRAY",
    "KERNEL_FLAGS",
    "MIN_QUANTISED_NUMEL",
    "QUANTISED",
    "STATE_PRECISIONS",
    "AdaMaxHyperparameters",
    "AdamHyperparameters",
    "Hyperparameters",
    "check_kernel_source",
    "option",
]
