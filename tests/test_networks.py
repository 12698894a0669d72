"""Figure 2a's dropout MLP and Figure 4's VAE against independent oracles: hand-counted parameters,
torch.distributions for the ELBO's terms, a Monte-Carlo KL, and the dropout rates' effect on activations."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from adamlab.lab.networks import (
    HIDDEN_DROPOUT,
    INPUT_DROPOUT,
    VAE,
    bernoulli_log_likelihood,
    dropout_mlp,
    gaussian_kl,
    negative_elbo,
    parameter_count,
)


def test_mlp_parameter_count_by_hand():
    # 784·1000 + 1000, 1000·1000 + 1000, 1000·10 + 10
    assert parameter_count(dropout_mlp()) == 784 * 1000 + 1000 + 1000 * 1000 + 1000 + 1000 * 10 + 10 == 1_796_010


def test_mlp_dropout_rates_are_hinton_et_al():
    assert (INPUT_DROPOUT, HIDDEN_DROPOUT) == (0.2, 0.5)
    model = dropout_mlp()
    assert model.input_dropout == 0.2 and model.hidden_dropout == 0.5


def test_mlp_dropout_train_vs_eval():
    """Evaluation is deterministic; in training the mean output over masks is close to the evaluation output
    (inverted dropout keeps expectations of the first layer exact), and the same generator state gives the
    same masks."""
    torch.manual_seed(0)
    model = dropout_mlp(n_features=20, n_classes=3)
    x = torch.rand(4, 20)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    a = model(x, torch.Generator().manual_seed(1))
    b = model(x, torch.Generator().manual_seed(1))
    c = model(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_mlp_input_dropout_fraction_and_scaling():
    """Input dropout zeroes about 20% of the pixels and scales the rest by 1/0.8 (inverted dropout)."""
    from adamlab.lab.models import dropout

    kept = dropout(torch.ones(1, 10_000), INPUT_DROPOUT, torch.Generator().manual_seed(0))
    survivors = kept[kept != 0]
    torch.testing.assert_close(survivors, torch.full_like(survivors, 1 / 0.8))
    assert abs(float((kept == 0).float().mean()) - 0.2) < 0.02  # 10,000 draws: sd 0.004


def test_vae_parameter_count_by_hand():
    # encoder 784·500 + 500, posterior 500·100 + 100, decoder 50·500 + 500, likelihood 500·784 + 784
    expected = 784 * 500 + 500 + 500 * 100 + 100 + 50 * 500 + 500 + 500 * 784 + 784
    assert parameter_count(VAE()) == expected == 860_884


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(5, 7, generator=g, dtype=torch.float64)
    logvar = torch.randn(5, 7, generator=g, dtype=torch.float64)
    oracle = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(torch.zeros_like(mu), 1.0)).sum(-1)
    torch.testing.assert_close(gaussian_kl(mu, logvar), oracle)
    # and zero exactly at the prior
    assert torch.equal(gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 4)), torch.zeros(3))


def test_bernoulli_log_likelihood_matches_torch_distributions():
    g = torch.Generator().manual_seed(1)
    logits = 4 * torch.randn(6, 9, generator=g, dtype=torch.float64)
    x = (torch.rand(6, 9, generator=g, dtype=torch.float64) < 0.4).double()
    oracle = Bernoulli(logits=logits).log_prob(x).sum(-1)
    torch.testing.assert_close(bernoulli_log_likelihood(logits, x), oracle)


def test_bernoulli_log_likelihood_grey_values_by_hand():
    logits = torch.tensor([[0.3, -1.2]], dtype=torch.float64)
    x = torch.tensor([[0.25, 0.9]], dtype=torch.float64)
    p = torch.sigmoid(logits)
    by_hand = (x * p.log() + (1 - x) * (1 - p).log()).sum(-1)
    torch.testing.assert_close(bernoulli_log_likelihood(logits, x), by_hand)


def test_vae_negative_elbo_is_kl_minus_loglik_at_the_drawn_sample():
    """The forward pass's −ELBO equals KL − log p(x|z) with z = μ + σ·ε for the ε the generator draws."""
    torch.manual_seed(0)
    model = VAE(n_features=12, hidden=8, latent=3).double()
    x = (torch.rand(4, 12, dtype=torch.float64) < 0.5).double()
    loss = model(x, torch.Generator().manual_seed(5))
    mu, logvar = model.encode(x)
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    z = mu + (0.5 * logvar).exp() * eps
    oracle = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1) - Bernoulli(
        logits=model.decode(z)
    ).log_prob(x).sum(-1)
    torch.testing.assert_close(loss, oracle)
    torch.testing.assert_close(negative_elbo(model, x, torch.Generator().manual_seed(5)), oracle.mean())


def test_vae_elbo_bounds_the_exact_marginal_likelihood():
    """For a 1-D latent, −ELBO ≥ −log p(x), with p(x) = ∫ p(x|z) p(z) dz by quadrature (Jensen's inequality);
    the Monte-Carlo average of the one-sample −ELBO is the ELBO's expectation."""
    torch.manual_seed(3)
    model = VAE(n_features=6, hidden=5, latent=1).double()
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    z = torch.linspace(-8, 8, 4001, dtype=torch.float64).unsqueeze(1)
    with torch.no_grad():
        log_joint = Bernoulli(logits=model.decode(z)).log_prob(x).sum(-1) + Normal(0.0, 1.0).log_prob(z[:, 0])
        log_px = torch.logsumexp(log_joint, 0) + torch.log(z[1, 0] - z[0, 0])
    with torch.no_grad():
        mc = model(x.expand(20_000, -1), torch.Generator().manual_seed(0)).mean()
    assert float(mc) >= float(-log_px) - 1e-3
    assert float(mc) < float(-log_px) + 5.0  # a bound, not a wild number


def test_vae_rejects_bad_sizes():
    with pytest.raises(ValueError, match="latent must be a positive integer"):
        VAE(latent=0)
    with pytest.raises(ValueError, match="hidden must be a positive integer"):
        VAE(hidden=2.5)  # type: ignore[arg-type]


def test_vae_trains_with_adam():
    """A few hundred Adam steps on a tiny binary set lower the −ELBO well below its starting value."""
    import adamlab

    torch.manual_seed(0)
    x = (torch.rand(64, 16) < 0.3).float()
    model = VAE(n_features=16, hidden=32, latent=4)
    opt = adamlab.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    start = negative_elbo(model, x, g).item()
    for _ in range(300):
        opt.zero_grad()
        negative_elbo(model, x, g).backward()
        opt.step()
    assert negative_elbo(model, x, g).item() < 0.8 * start
