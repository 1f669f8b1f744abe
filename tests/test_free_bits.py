"""Free bits of z's KL (``kl_free_bits``): a factor that makes the loss flat in the KL below
the allowance, and changes nothing above it."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

from helpers import make_batch, make_module
from sigma_pyro.config import load_config
from sigma_pyro.errors import ConfigError
from sigma_pyro.inference.elbo_loss import ElboLoss

KL_SCALE = 0.5


def loss_and_grads(prior: str, free_bits: float, **overrides):
    module = make_module(prior, kl_free_bits=free_bits, **overrides)
    module.train()
    loss_fn = ElboLoss(module, module.model, module.guide, Trace_ELBO())
    pyro.clear_param_store()
    torch.manual_seed(1)
    loss = loss_fn(make_batch(), KL_SCALE, 1.0)
    loss.backward()
    return loss.item(), {n: p.grad for n, p in module.named_parameters()}


def prior_only(prior: str, name: str) -> bool:
    """Parameters that only the KL of z trains: the mixture components' map and scales."""
    return name.startswith(("interests.to_latent", "interests.log_variance")) or (
        prior == "gmm" and name.startswith("prior.")
    )


@pytest.mark.parametrize("prior", ["sigma", "gmm"])
def test_an_allowance_above_the_kl_stops_its_gradient(prior):
    _, plain = loss_and_grads(prior, 0.0)
    _, free = loss_and_grads(prior, 1e6)
    names = [n for n in plain if prior_only(prior, n)]
    assert names, "the test needs parameters that only the KL trains"
    for name in names:
        assert plain[name].abs().max() > 1e-4, name  # the KL does train them ...
        assert torch.allclose(free[name], torch.zeros_like(free[name]), atol=1e-6), name
    # ... while the likelihood still trains the rest.
    assert free["item_embedding.weight"].abs().max() > 1e-4


def test_an_allowance_below_the_kl_changes_nothing():
    plain_loss, plain = loss_and_grads("normal", 0.0, hidden_dropout=0.2)
    free_loss, free = loss_and_grads("normal", 1e-9, hidden_dropout=0.2)
    assert free_loss == pytest.approx(plain_loss, rel=1e-6)
    for name, grad in plain.items():
        if grad is not None:
            assert torch.allclose(free[name], grad, rtol=1e-4, atol=1e-7), name


def test_the_loss_is_flat_at_the_allowance():
    """Below the allowance the loss is the likelihood part plus KL_SCALE * allowance, so two
    allowances differ by exactly KL_SCALE * their difference * tokens."""
    tokens = make_batch().num_tokens
    low, _ = loss_and_grads("normal", 1e5)
    high, _ = loss_and_grads("normal", 2e5)
    assert high - low == pytest.approx(KL_SCALE * 1e5 * tokens, rel=1e-5)


def test_training_without_the_guide_encoding_is_refused():
    module = make_module("normal", kl_free_bits=1.0)
    module.train()
    with pytest.raises(ValueError, match="guide's encoding"):
        Trace_ELBO().differentiable_loss(module.model, module.guide, make_batch(), 1.0, 1.0)


@pytest.mark.parametrize(
    "overrides,needle",
    [
        ({"model": {"kl_free_bits": -1.0}}, "--kl-free-bits must be >= 0"),
        (
            {"model": {"prior": "normal", "kl_free_bits": 1.0}, "train": {"analytic_kl": True}},
            "--kl-free-bits needs the Monte Carlo KL",
        ),
    ],
)
def test_bad_allowances_are_one_line_errors(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(None, overrides)
