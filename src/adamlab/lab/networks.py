"""The networks of Figures 2a and 4 (§6.2, §6.4) and the variational auto-encoder's objective.

**Figure 2a** — a multilayer network on MNIST: 784-1000-1000-10, ReLU, dropout. The paper cites Hinton et al.
(2012, "Improving neural networks by preventing co-adaptation of feature detectors") for the dropout; their
MNIST networks drop 20% of the input pixels and 50% of the hidden units, and we take those rates
(:data:`INPUT_DROPOUT`, :data:`HIDDEN_DROPOUT`). The network itself is the lab's :class:`~adamlab.lab.models.MLP`
(one home for the MLP); :func:`dropout_mlp` builds it with these choices. No L2 penalty (:data:`MLP_L2` = 0):
dropout is the regulariser in Hinton et al.; the paper gives no coefficient for Figure 2a (it mentions L2 weight
decay only for the deterministic network of Figure 2b). Initial weights N(0, 0.01²), biases 0
(:data:`INIT_STD`; Hinton et al.'s MNIST nets also start from N(0, 0.01²)).

**Figure 4** — a variational auto-encoder (Kingma & Welling 2013, "Auto-encoding variational Bayes", AEVB) as
the paper describes it: one hidden layer of 500 softplus units in the encoder and in the decoder, a
50-dimensional spherical Gaussian latent variable z, and a Bernoulli decoder on MNIST's 784 pixels:

.. code-block:: text

    encoder   h = softplus(W₁x + b₁)              784 → 500
              μ = W_μ h + b_μ,  log σ² = W_σ h + b_σ          500 → 50 + 50
    sample    z = μ + σ ⊙ ε,  ε ~ N(0, I)          (the reparameterisation trick, AEVB §2.4)
    decoder   h' = softplus(W₂z + b₂)             50 → 500
              logits = W₃h' + b₃,  p = sigmoid(logits)         500 → 784

The loss is the **negative evidence lower bound** per example, in nats, with one sample of z (AEVB's L = 1):

.. code-block:: text

    −ELBO(x) = KL(q(z|x) ‖ p(z)) − log p(x|z)
    KL       = −½ Σ_j (1 + log σ_j² − μ_j² − σ_j²)                  (closed form, AEVB appendix B)
    log p(x|z) = Σ_i x_i·log p_i + (1 − x_i)·log(1 − p_i)

MNIST's grey values x ∈ [0, 1] enter the Bernoulli log-likelihood as they are (the usual continuous relaxation;
for binary x it is exactly the Bernoulli log-probability). Weights start N(0, 0.01²) as in AEVB ("initialized by
random sampling from N(0, 0.01)"), biases 0. AEVB's optional weight-decay prior is not used.

Randomness (dropout masks, the ε of the reparameterisation) comes from an explicit :class:`torch.Generator`
passed to ``forward`` so that a run can be checkpointed and resumed bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from adamlab.lab.models import MLP, Objective, register_model, register_objective
from adamlab.lab.spec import ModelSpec

__all__ = [
    "HIDDEN_DROPOUT",
    "INIT_STD",
    "INPUT_DROPOUT",
    "MLP_HIDDEN",
    "MLP_L2",
    "VAE",
    "VAE_HIDDEN",
    "VAE_LATENT",
    "bernoulli_log_likelihood",
    "dropout_mlp",
    "gaussian_kl",
    "negative_elbo",
    "parameter_count",
]

#: Figure 2a: two hidden layers of 1000 ReLU units.
MLP_HIDDEN = (1000, 1000)
#: Hinton et al. (2012), MNIST: drop 20% of the inputs and 50% of the hidden units.
INPUT_DROPOUT = 0.2
HIDDEN_DROPOUT = 0.5
#: Figure 2a's L2 coefficient: none (dropout regularises; the paper gives none for 2a).
MLP_L2 = 0.0
#: Initial weights N(0, INIT_STD²), biases 0 (Hinton et al. 2012 for the MLP; AEVB for the VAE).
INIT_STD = 0.01
#: Figure 4: 500 softplus hidden units, 50-dimensional latent.
VAE_HIDDEN = 500
VAE_LATENT = 50


def dropout_mlp(n_features: int = 784, n_classes: int = 10) -> MLP:
    """Figure 2a's network: ``n_features``-1000-1000-``n_classes``, ReLU, 20% input and 50% hidden dropout."""
    return MLP(n_features, MLP_HIDDEN, n_classes, input_dropout=INPUT_DROPOUT, hidden_dropout=HIDDEN_DROPOUT)


def parameter_count(model: nn.Module) -> int:
    """The number of trainable scalars of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, diag σ²) ‖ N(0, I)) per example, summed over the latent dimensions (last axis):
    −½ Σ_j (1 + log σ_j² − μ_j² − σ_j²) (AEVB, appendix B)."""
    return -0.5 * torch.sum(1.0 + logvar - mu.pow(2) - logvar.exp(), dim=-1)


def bernoulli_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x | logits) per example, summed over the last axis: Σ_i x_i·log p_i + (1 − x_i)·log(1 − p_i) with
    p = sigmoid(logits), computed stably from the logits."""
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=-1)


class VAE(nn.Module):
    """Figure 4's variational auto-encoder (see the module docstring): softplus encoder 784-500-(50+50),
    Gaussian latent, softplus decoder 50-500-784 with Bernoulli outputs.

    ``forward(x, generator)`` returns the per-example negative ELBO (one sample of z drawn with ``generator``);
    :meth:`encode` and :meth:`decode` expose the two halves.
    """

    def __init__(self, n_features: int = 784, hidden: int = VAE_HIDDEN, latent: int = VAE_LATENT) -> None:
        super().__init__()
        for name, value in (("n_features", n_features), ("hidden", hidden), ("latent", latent)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.latent = latent
        self.encoder = nn.Linear(n_features, hidden)
        # μ and log σ² from one matrix (the two halves of its output): one matmul instead of two.
        self.posterior = nn.Linear(hidden, 2 * latent)
        self.decoder = nn.Linear(latent, hidden)
        self.likelihood = nn.Linear(hidden, n_features)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The approximate posterior q(z|x) = N(μ, diag σ²): returns ``(μ, log σ²)``."""
        mu, logvar = self.posterior(F.softplus(self.encoder(x))).chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The Bernoulli decoder's logits of p(x|z)."""
        return self.likelihood(F.softplus(self.decoder(z)))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mu, logvar = self.encode(x)
        noise = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        z = mu + torch.exp(0.5 * logvar) * noise
        return gaussian_kl(mu, logvar) - bernoulli_log_likelihood(self.decode(z), x)


def negative_elbo(model: nn.Module, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The minibatch objective of Figure 4: the mean over examples of −ELBO (nats per example). ``model`` is a
    :class:`VAE` (or a wrapper of one, e.g. DistributedDataParallel)."""
    return model(x, generator).mean()


def _negative_elbo_and_outputs(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    del y  # unsupervised: the labels are not used
    per_example = model(x, generator)
    return per_example.mean(), per_example


def _negative_elbo_objective(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    return _negative_elbo_and_outputs(model, x, y, generator)[0]


def _build_vae(spec: ModelSpec, n_features: int, n_classes: int) -> nn.Module:
    del n_classes
    allowed = {"hidden", "latent"}
    unknown = sorted(set(spec.options) - allowed)
    if unknown:
        raise ValueError(f"unknown VAE option(s) {unknown}; allowed: {sorted(allowed)}")
    return VAE(n_features, **spec.options)


# The lab's registries: specs name the VAE as ModelSpec(kind="vae", objective="negative_elbo").
register_model("vae", _build_vae)
register_objective(
    "negative_elbo",
    Objective(_negative_elbo_objective, classifier=False, loss_and_outputs=_negative_elbo_and_outputs),
)
