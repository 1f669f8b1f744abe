"""The alternative priors (gmm, vamp, sigma-uniform), the sigma ablation flags and the
analytic-KL option of the normal prior."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from torch.distributions import kl_divergence

from helpers import HIDDEN, PSEUDO, K, make_batch, make_module, traces, widen
from sigma_pyro.api import SigmaRecommender
from sigma_pyro.cli.commands.common import config_overrides
from sigma_pyro.cli.main import build_parser
from sigma_pyro.config import load_config
from sigma_pyro.errors import ConfigError
from sigma_pyro.models.priors import PRIORS, PriorInputs
from sigma_pyro.nn.interests import Interests

ALL_PRIORS = ("normal", "gmm", "vamp", "sigma", "sigma-uniform")


def prior_of(module, batch):
    interests = (
        module.extract_interests(batch.items, batch.mask)
        if module.prior.requires_interests
        else None
    )
    return module.prior(
        PriorInputs(tuple(batch.items.shape), HIDDEN, interests, batch.items.device, module)
    )


def test_every_prior_is_registered():
    assert set(ALL_PRIORS) <= set(PRIORS)


@pytest.mark.parametrize("prior", ALL_PRIORS)
def test_prior_shapes_and_trace(prior):
    module = make_module(prior).eval()
    batch = make_batch()
    p = prior_of(module, batch)
    assert tuple(p.batch_shape) == tuple(batch.items.shape)
    assert tuple(p.event_shape) == (HIDDEN,)
    z = torch.randn(*batch.items.shape, HIDDEN)
    assert p.log_prob(z).shape == batch.items.shape
    assert torch.isfinite(p.log_prob(z)).all()

    model_trace, _ = traces(module, batch)
    site = model_trace.nodes["z"]
    assert tuple(site["fn"].batch_shape) == tuple(batch.items.shape)
    assert (site["log_prob"][~batch.mask] == 0).all()
    assert ("interest_next_item" in model_trace.nodes) == PRIORS[prior].requires_interests


@pytest.mark.parametrize("prior", ALL_PRIORS)
def test_prior_trains_with_finite_loss(prior):
    module = make_module(prior)
    batch = make_batch(seed=1)
    pyro.set_rng_seed(0)
    svi = SVI(module.model, module.guide, pyro.optim.ClippedAdam({"lr": 0.01}), Trace_ELBO())
    losses = [svi.step(batch, 0.1, 0.2) for _ in range(4)]
    assert all(math.isfinite(loss) for loss in losses)


@pytest.mark.parametrize(
    "prior,names", [("gmm", ("logits", "loc", "log_scale")), ("vamp", ("pseudo_inputs",))]
)
def test_learnable_prior_parameters_get_gradients_and_move(prior, names):
    module = make_module(prior).eval()
    batch = make_batch(seed=2)
    pyro.set_rng_seed(0)
    Trace_ELBO().differentiable_loss(module.model, module.guide, batch, 1.0, 1.0).backward()
    for name in names:
        grad = getattr(module.prior, name).grad
        assert grad is not None and grad.abs().sum() > 0, name

    module.zero_grad()
    before = {n: getattr(module.prior, n).detach().clone() for n in names}
    svi = SVI(module.model, module.guide, pyro.optim.ClippedAdam({"lr": 0.01}), Trace_ELBO())
    svi.step(batch, 1.0, 1.0)
    for name in names:
        assert not torch.equal(getattr(module.prior, name), before[name]), name


def test_gmm_is_the_learned_mixture():
    module = make_module("gmm", seed=3)
    with torch.no_grad():
        module.prior.logits.copy_(torch.tensor([0.5, -1.0, 0.2]))
        module.prior.log_scale.normal_(0, 0.3)
    batch = make_batch(seed=3)
    z = torch.randn(*batch.items.shape, HIDDEN)
    p = prior_of(module, batch)
    prior = module.prior
    components = (
        torch.distributions.Normal(prior.loc, prior.log_scale.exp())
        .log_prob(z.unsqueeze(-2))
        .sum(-1)
    )
    manual = torch.logsumexp(torch.log_softmax(prior.logits, -1) + components, dim=-1)
    torch.testing.assert_close(p.log_prob(z), manual, rtol=1e-5, atol=1e-4)
    assert p.mixture_distribution.logits.shape[-1] == K


def test_vamp_components_are_the_guides_posteriors_at_pseudo_inputs():
    module = make_module("vamp", seed=4).eval()
    batch = make_batch(seed=4)
    p = prior_of(module, batch)
    loc, scale = module.encode_vectors(module.prior.pseudo_inputs)
    components = p.component_distribution.base_dist
    torch.testing.assert_close(components.loc[0, 0], loc[:, -1])
    torch.testing.assert_close(components.scale[0, 0], scale[:, -1])
    weights = p.mixture_distribution.probs[0, 0]
    torch.testing.assert_close(weights, torch.full((PSEUDO,), 1.0 / PSEUDO))
    assert module.prior.pseudo_inputs.shape[0] == PSEUDO


def test_sigma_uniform_weighs_active_interests_equally():
    module = make_module("sigma-uniform")
    assert module.prior.requires_interests and module.interests is not None
    # K = 3: active means intensity above 1/6, or the strongest one.
    intensity = torch.tensor(
        [[[0.7, 0.2, 0.1], [0.9, 0.05, 0.05], [0.34, 0.33, 0.33], [0.1, 0.1, 0.8]]]
    )
    expected = torch.tensor(
        [[[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.0, 0.0, 1.0]]]
    )
    loc, scale = torch.randn(1, 4, K, HIDDEN), torch.rand(1, 4, K, HIDDEN) + 0.1
    interests = Interests(torch.zeros_like(intensity), intensity, loc, loc, scale)
    # The -inf logits of inactive interests must pass Pyro's argument checks.
    with pyro.validation_enabled(True):
        p = module.prior(PriorInputs((1, 4), HIDDEN, interests, torch.device("cpu"), module))
    torch.testing.assert_close(p.mixture_distribution.probs, expected)
    torch.testing.assert_close(p.component_distribution.base_dist.loc, loc)
    z = torch.randn(1, 4, HIDDEN)
    components = torch.distributions.Normal(loc, scale).log_prob(z.unsqueeze(-2)).sum(-1)
    manual = torch.logsumexp(expected.log() + components, dim=-1)
    torch.testing.assert_close(p.log_prob(z), manual, rtol=1e-5, atol=1e-4)

    # Its gradients reach the interest module, which must therefore train.
    batch = make_batch(seed=5)
    pyro.set_rng_seed(0)
    Trace_ELBO().differentiable_loss(module.model, module.guide, batch, 1.0, 1.0).backward()
    assert module.interests.raw_prototypes.grad.abs().sum() > 0


# -- ablations of sigma ------------------------------------------------------------------------


def parse_config(*flags: str):
    args = build_parser().parse_args(["train", *flags])
    return load_config("synthetic", config_overrides(args))


def test_ablation_flags_parse():
    config = parse_config(
        "--orthogonality-weight", "0", "--no-train-prototypes", "--num-interests", "2"
    )
    assert config.model.orthogonality_weight == 0
    assert config.model.train_prototypes is False
    assert config.model.num_interests == 2


def svi_steps(module, batch, steps: int = 3):
    pyro.set_rng_seed(0)
    svi = SVI(module.model, module.guide, pyro.optim.ClippedAdam({"lr": 0.05}), Trace_ELBO())
    return [svi.step(batch, 0.1, 0.2) for _ in range(steps)]


# Frozen prototypes are a buffer: Pyro has nothing to warn about on every step.
@pytest.mark.filterwarnings("error:interests.raw_prototypes was not registered")
@pytest.mark.parametrize("trainable", [True, False])
def test_frozen_prototypes_stay_at_their_initialisation(trainable):
    module = make_module("sigma", train_prototypes=trainable)
    initial = module.interests.raw_prototypes.detach().clone()
    embeddings = module.item_embedding.weight.detach().clone()
    batch = make_batch(seed=6)
    assert all(math.isfinite(x) for x in svi_steps(module, batch))
    moved = not torch.equal(module.interests.raw_prototypes, initial)
    assert moved == trainable
    assert not torch.equal(module.item_embedding.weight, embeddings), "the rest must train"


def test_zero_orthogonality_weight_trains_without_the_penalty():
    module = make_module("sigma", orthogonality_weight=0.0)
    batch = make_batch(seed=7)
    trace = poutine.trace(module.model).get_trace(batch, 0.1, 0.2)
    assert "orthogonality" not in trace.nodes
    assert all(math.isfinite(x) for x in svi_steps(module, batch))


@pytest.mark.parametrize("prior", ["sigma", "sigma-uniform", "gmm"])
def test_num_interests_sets_the_number_of_components(prior):
    module = make_module(prior, num_interests=5).eval()
    batch = make_batch(seed=8)
    p = prior_of(module, batch)
    assert p.mixture_distribution.logits.shape[-1] == 5
    if module.interests is not None:
        assert module.interests.prototypes.shape == (5, HIDDEN)


# -- the analytic KL -----------------------------------------------------------------------------


def z_sites(module, batch):
    model_trace, guide_trace = traces(module, batch)
    return guide_trace.nodes["z"]["fn"], model_trace.nodes["z"]["fn"]


def spread_out_normal_module():
    module = make_module("normal", seed=9).eval()
    with torch.no_grad():
        # Posterior scales near 0.7 rather than the initial 0.05, so the Monte Carlo KL
        # estimate has a visible spread to test against.
        module.scale_head.bias.fill_(0.0)
    return module


def test_analytic_kl_equals_the_monte_carlo_mean_and_respects_the_mask():
    module = spread_out_normal_module()
    batch = make_batch(seed=9)
    q, p = z_sites(module, batch)
    analytic = kl_divergence(q, p)  # what TraceMeanField uses
    assert analytic.shape == batch.items.shape
    assert (analytic[~batch.mask] == 0).all()
    loc, scale = module.encode(batch.items)
    closed_form = (0.5 * (scale**2 + loc**2 - 1) - scale.log()).sum(-1)[batch.mask].sum()
    torch.testing.assert_close(analytic.sum(), closed_form.detach())

    torch.manual_seed(0)
    draws = q.sample((4000,))
    estimates = (q.log_prob(draws) - p.log_prob(draws)).sum(dim=(1, 2))
    standard_error = estimates.std() / math.sqrt(len(estimates))
    assert abs(estimates.mean() - analytic.sum()) < 4 * standard_error

    # Padding columns with the same mask semantics add nothing.
    wide_q, wide_p = z_sites(module, widen(batch, 3))
    torch.testing.assert_close(kl_divergence(wide_q, wide_p).sum(), analytic.sum())


def test_trace_mean_field_loss_agrees_with_trace_elbo():
    module = spread_out_normal_module()
    batch = make_batch(seed=10)
    pyro.set_rng_seed(0)
    runs = 150
    with torch.no_grad():
        analytic = np.array(
            [
                TraceMeanField_ELBO().loss(module.model, module.guide, batch, 1.0, 1.0)
                for _ in range(runs)
            ]
        )
        sampled = np.array(
            [Trace_ELBO().loss(module.model, module.guide, batch, 1.0, 1.0) for _ in range(runs)]
        )
    error = math.sqrt(analytic.var(ddof=1) / runs + sampled.var(ddof=1) / runs)
    assert abs(analytic.mean() - sampled.mean()) < 4 * error
    # The closed form removes the KL's sampling noise: the analytic loss varies far less.
    assert analytic.std() < 0.5 * sampled.std()


def test_analytic_kl_is_rejected_for_other_priors():
    assert load_config(
        "synthetic", {"train": {"analytic_kl": True}, "model": {"prior": "normal"}}
    ).train.analytic_kl
    for prior in ("sigma", "gmm", "vamp", "sigma-uniform"):
        with pytest.raises(ConfigError, match="--analytic-kl"):
            load_config("synthetic", {"train": {"analytic_kl": True}, "model": {"prior": prior}})


def test_trainer_uses_trace_mean_field_with_analytic_kl(monkeypatch):
    import sigma_pyro.inference.training as training

    built = []

    class Recording(TraceMeanField_ELBO):
        def __init__(self, *args, **kwargs):
            built.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(training, "TraceMeanField_ELBO", Recording)
    rec = SigmaRecommender.from_preset(
        "synthetic",
        prior="normal",
        analytic_kl=True,
        synthetic_users=60,
        synthetic_items=40,
        synthetic_categories=4,
        hidden_size=16,
        num_heads=2,
        max_seq_length=8,
        batch_size=64,
        epochs=1,
        progress=False,
    )
    summary = rec.fit(log=lambda line: None)
    assert len(built) == 1
    assert summary.epochs_run == 1 and math.isfinite(summary.history[-1].loss)


def test_deterministic_variant_has_no_latent_and_its_loss_is_the_exact_nll():
    module = make_module("deterministic").eval()
    batch = make_batch(seed=3)
    model_trace, guide_trace = traces(module, batch)
    assert "z" not in model_trace.nodes and "z" not in guide_trace.nodes
    # z is the encoder mean: the next-item scores are those of decode(mean).
    loc, scale = module.encode(batch.items)
    assert (scale == 0).all()
    logits = module.item_logits(module.decode(loc, batch.mask.sum(1))[batch.mask])
    expected = (
        torch.log_softmax(logits, -1).gather(1, (batch.targets[batch.mask] - 1).unsqueeze(1)).sum()
    )
    assert torch.allclose(model_trace.nodes["next_item"]["log_prob_sum"], expected, atol=1e-4)
    loss = Trace_ELBO().loss(module.model, module.guide, batch, 1.0, 1.0)
    assert loss == pytest.approx(-expected.item(), rel=1e-5)


def test_deterministic_variant_trains_the_encoder():
    module = make_module("deterministic")
    batch = make_batch(seed=4)
    pyro.set_rng_seed(0)
    before = module.loc_head.weight.detach().clone()
    svi = SVI(module.model, module.guide, pyro.optim.ClippedAdam({"lr": 0.01}), Trace_ELBO())
    losses = [svi.step(batch, 0.1, 0.2) for _ in range(6)]
    assert losses[-1] < losses[0]
    assert not torch.equal(module.loc_head.weight, before)
