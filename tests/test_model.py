"""The Pyro model and guide: trace structure, masking, the mixture prior, SVI, penalties."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO

from helpers import HIDDEN, MAX_LEN, NUM_ITEMS, K, make_batch, make_module, traces, widen
from sigma_pyro.config import ModelConfig
from sigma_pyro.data.batching import SequenceBatch, TrainingBatches
from sigma_pyro.inference.objective import elbo_terms
from sigma_pyro.models.priors import PriorInputs
from sigma_pyro.nn.module import SigmaModule

KL_SCALE, INTEREST_SCALE = 0.1, 0.2
PLATES = ("sequences", "positions", "tokens")


def sample_sites(trace) -> dict:
    return {
        name: site
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and name not in PLATES
    }


# -- trace structure ----------------------------------------------------------------------


@pytest.mark.parametrize("prior", ["sigma", "normal"])
def test_trace_sites_and_shapes(prior):
    module = make_module(prior)
    batch = make_batch()
    num_sequences, length = batch.items.shape
    model_trace, guide_trace = traces(module, batch, KL_SCALE, INTEREST_SCALE)
    model_sites, guide_sites = sample_sites(model_trace), sample_sites(guide_trace)

    expected_model = {"z", "next_item"}
    expected_guide = {"z"}
    if prior == "sigma":
        # The interest plate records its subsample indices as a site of its own. The
        # interests are deterministic: no latent site in either program.
        expected_model |= {
            "interest_next_item",
            "orthogonality",
            "balance",
            "sharpness",
            "interest_tokens",
        }
    assert set(model_sites) == expected_model
    assert set(guide_sites) == expected_guide

    for trace in (model_trace, guide_trace):
        z = trace.nodes["z"]
        assert tuple(z["fn"].batch_shape) == (num_sequences, length)
        assert tuple(z["fn"].event_shape) == (HIDDEN,)
        assert tuple(z["value"].shape) == (num_sequences, length, HIDDEN)
        assert z["scale"] == pytest.approx(KL_SCALE)
        assert tuple(z["log_prob"].shape) == (num_sequences, length)
        # Masked: padding positions contribute exactly zero.
        assert (z["log_prob"][~batch.mask] == 0).all()
    # The guide's z is the one the model scores (replay).
    assert torch.equal(model_trace.nodes["z"]["value"], guide_trace.nodes["z"]["value"])

    next_item = model_trace.nodes["next_item"]
    assert next_item["is_observed"]
    assert tuple(next_item["value"].shape) == (batch.num_tokens,)
    assert tuple(next_item["fn"].logits.shape) == (batch.num_tokens, NUM_ITEMS)
    # Observed classes are the real targets, shifted to 0..N-1.
    assert torch.equal(next_item["value"], batch.targets[batch.mask] - 1)
    assert next_item["value"].min() >= 0 and next_item["value"].max() < NUM_ITEMS
    assert math.isfinite(next_item["log_prob_sum"].item())

    if prior == "sigma":
        observed = model_trace.nodes["interest_next_item"]
        assert observed["is_observed"]
        # The interest head predicts the next item at every real position.
        assert tuple(observed["fn"].batch_shape) == (batch.num_tokens,)
        assert torch.equal(observed["value"], batch.targets[batch.mask] - 1)
        assert observed["scale"] == pytest.approx(INTEREST_SCALE)


@pytest.mark.parametrize("prior", ["sigma", "normal"])
def test_guide_is_the_encoder(prior):
    module = make_module(prior).eval()
    batch = make_batch(seed=4)
    _, guide_trace = traces(module, batch, KL_SCALE, INTEREST_SCALE)
    loc, scale = module.encode(batch.items)
    fn = guide_trace.nodes["z"]["fn"].base_dist.base_dist
    torch.testing.assert_close(fn.loc, loc)
    torch.testing.assert_close(fn.scale, scale)


@pytest.mark.parametrize("positions", ["all", "last"])
def test_interest_head_scores_the_causal_interest_means(positions):
    module = make_module("sigma", interest_positions=positions).eval()
    batch = make_batch(seed=4)
    model_trace, _ = traces(module, batch, KL_SCALE, INTEREST_SCALE)
    interests = module.extract_interests(batch.items, batch.mask)
    rows, last = torch.arange(batch.items.shape[0]), batch.mask.sum(1) - 1
    if positions == "all":
        loc, targets = interests.loc[batch.mask], batch.targets[batch.mask] - 1
    else:
        loc, targets = interests.loc[rows, last], batch.targets[rows, last] - 1
    observed = model_trace.nodes["interest_next_item"]
    torch.testing.assert_close(
        observed["fn"].logits, torch.log_softmax(module.interest_logits(loc), dim=-1)
    )
    assert torch.equal(observed["value"], targets)


# -- masking ------------------------------------------------------------------------------


@pytest.mark.parametrize("prior", ["sigma", "normal"])
def test_garbage_at_padding_does_not_change_log_densities(prior):
    module = make_module(prior).eval()
    batch = make_batch(seed=1)
    pyro.set_rng_seed(0)
    clean_model, guide_trace = traces(module, batch, KL_SCALE, INTEREST_SCALE)
    clean = {n: s["log_prob_sum"].item() for n, s in sample_sites(clean_model).items()}
    clean_guide_z = guide_trace.nodes["z"]["log_prob_sum"].item()

    garbage = guide_trace.nodes["z"]["value"].detach().clone()
    garbage[~batch.mask] = 1.0e4
    guide_trace.nodes["z"]["value"] = garbage
    for site in guide_trace.nodes.values():
        (
            site.pop("log_prob", None),
            site.pop("log_prob_sum", None),
            site.pop("unscaled_log_prob", None),
        )
    dirty_model = poutine.trace(poutine.replay(module.model, trace=guide_trace)).get_trace(
        batch, KL_SCALE, INTEREST_SCALE
    )
    dirty_model.compute_log_prob()
    guide_trace.compute_log_prob()
    dirty = {n: s["log_prob_sum"].item() for n, s in sample_sites(dirty_model).items()}
    assert dirty.keys() == clean.keys()
    for name in clean:
        assert dirty[name] == pytest.approx(clean[name], rel=1e-5, abs=1e-4), name
    assert guide_trace.nodes["z"]["log_prob_sum"].item() == pytest.approx(clean_guide_z, rel=1e-5)

    # Non-vacuous: garbage at a real position does change the z and next_item terms.
    real = garbage.clone()
    # Not a constant shift: the decoder's input layer norm would remove it.
    real[batch.mask] += 3.0 * torch.randn(
        real[batch.mask].shape, generator=torch.Generator().manual_seed(0)
    )
    guide_trace.nodes["z"]["value"] = real
    moved = poutine.trace(poutine.replay(module.model, trace=guide_trace)).get_trace(
        batch, KL_SCALE, INTEREST_SCALE
    )
    moved.compute_log_prob()
    assert moved.nodes["z"]["log_prob_sum"].item() != pytest.approx(clean["z"], rel=1e-3)
    assert moved.nodes["next_item"]["log_prob_sum"].item() != pytest.approx(
        clean["next_item"], rel=1e-3
    )


def pinned_guide(module, batch: SequenceBatch, garbage: float | None = None):
    """The guide with every latent pinned to its posterior mean (z at padding set to
    ``garbage``): a replay of the guide against a trace holding those values, so the sites
    stay latent (sampled) for the model's replay."""
    trace = poutine.trace(module.guide).get_trace(batch, KL_SCALE, INTEREST_SCALE)
    loc, _ = module.encode(batch.items)
    z = loc.detach().clone()
    if garbage is not None:
        z[~batch.mask] = garbage
    trace.nodes["z"]["value"] = z
    return poutine.replay(module.guide, trace=trace)


@pytest.mark.parametrize("prior", ["sigma", "normal"])
def test_extra_padding_columns_do_not_change_the_elbo(prior):
    module = make_module(prior).eval()
    narrow = make_batch(seed=2)
    wide = widen(narrow, MAX_LEN - narrow.items.shape[1])
    assert wide.items.shape[1] > narrow.items.shape[1]

    def elbo(batch, garbage):
        model_trace, guide_trace = traces(
            module, batch, KL_SCALE, INTEREST_SCALE, guide=pinned_guide(module, batch, garbage)
        )
        return {
            **{
                f"model.{n}": s["log_prob_sum"].item() for n, s in sample_sites(model_trace).items()
            },
            **{
                f"guide.{n}": s["log_prob_sum"].item() for n, s in sample_sites(guide_trace).items()
            },
        }

    a, b = elbo(narrow, None), elbo(wide, 123.0)
    assert a.keys() == b.keys()
    for name in a:
        assert b[name] == pytest.approx(a[name], rel=1e-5, abs=1e-4), name

    # The same through the reporting code (objective.elbo_terms), which reads the traces.
    terms = {}
    for key, batch, garbage in (("narrow", narrow, None), ("wide", wide, -50.0)):
        original = module.guide
        module.guide = pinned_guide(module, batch, garbage)
        try:
            terms[key] = elbo_terms(module, batch, KL_SCALE, INTEREST_SCALE)
        finally:
            module.guide = original
    for name, value in terms["narrow"].items():
        assert terms["wide"][name] == pytest.approx(value, rel=1e-5, abs=1e-5), name


def test_elbo_terms_match_trace_elbo():
    module = make_module("sigma").eval()
    batch = make_batch(seed=3)
    pyro.set_rng_seed(5)
    loss = Trace_ELBO().loss(module.model, module.guide, batch, KL_SCALE, INTEREST_SCALE)
    pyro.set_rng_seed(5)
    terms = elbo_terms(module, batch, KL_SCALE, INTEREST_SCALE)
    assert terms["loss"] * batch.num_tokens == pytest.approx(loss, rel=1e-4)
    assert terms["nll"] > 0 and terms["interest_nll"] > 0
    # The annealed loss per token is nll + beta * kl_z + lambda * interest_nll (every real
    # position scored in eval mode) + the weighted penalties, each per token.
    recombined = (
        terms["nll"]
        + KL_SCALE * terms["kl_z"]
        + INTEREST_SCALE * terms["interest_nll"]
        + terms["orthogonality"]
        + terms["balance"]
        + terms["sharpness"]
    )
    assert recombined == pytest.approx(terms["loss"], rel=1e-4, abs=1e-5)


# -- the priors ---------------------------------------------------------------------------


def test_mixture_prior_log_prob_matches_manual_logsumexp():
    module = make_module("sigma", seed=1).eval()
    with torch.no_grad():
        module.item_embedding.weight[1:].normal_()
    batch = make_batch(seed=5)
    interests = module.extract_interests(batch.items, batch.mask)
    B, L = batch.items.shape
    prior = module.prior(PriorInputs((B, L), HIDDEN, interests, batch.items.device))
    assert isinstance(prior, dist.MixtureSameFamily)
    z = torch.randn(B, L, HIDDEN, generator=torch.Generator().manual_seed(0))
    log_w = torch.log(interests.intensity / interests.intensity.sum(-1, keepdim=True))
    components = (
        torch.distributions.Normal(interests.component_loc, interests.scale)
        .log_prob(z.unsqueeze(-2))
        .sum(-1)
    )  # [B, L, K]
    manual = torch.logsumexp(log_w + components, dim=-1)
    torch.testing.assert_close(prior.log_prob(z), manual, rtol=1e-5, atol=1e-4)
    # Intensities at real positions are proper mixture weights.
    sums = interests.intensity.sum(-1)[batch.mask]
    torch.testing.assert_close(sums, torch.ones_like(sums), rtol=0, atol=1e-4)


def test_normal_prior_is_standard_normal():
    module = make_module("normal")
    prior = module.prior(PriorInputs((3, 5), HIDDEN, None, torch.device("cpu")))
    z = torch.randn(3, 5, HIDDEN)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    torch.testing.assert_close(prior.log_prob(z), expected)
    assert module.interests is None


# -- optimisation --------------------------------------------------------------------------


@pytest.mark.parametrize("prior", ["sigma", "normal"])
def test_svi_reduces_the_loss(prior):
    module = make_module(prior, seed=0)
    module.train()
    batch = make_batch(seed=6, users=16)
    pyro.set_rng_seed(0)
    svi = SVI(
        module.model,
        module.guide,
        pyro.optim.ClippedAdam({"lr": 0.01, "clip_norm": 10.0}),
        Trace_ELBO(),
    )
    losses = [svi.step(batch, KL_SCALE, INTEREST_SCALE) / batch.num_tokens for _ in range(60)]
    assert all(math.isfinite(x) for x in losses)
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < first - 1.0, f"loss went from {first:.3f} to {last:.3f}"


def test_two_particles_work():
    module = make_module("sigma")
    batch = make_batch(seed=7)
    pyro.set_rng_seed(1)
    before = {k: v.detach().clone() for k, v in module.named_parameters()}
    svi = SVI(
        module.model,
        module.guide,
        pyro.optim.ClippedAdam({"lr": 0.01}),
        Trace_ELBO(num_particles=2),
    )
    losses = [svi.step(batch, KL_SCALE, INTEREST_SCALE) for _ in range(3)]
    assert all(math.isfinite(x) for x in losses)
    changed = [k for k, v in module.named_parameters() if not torch.equal(v, before[k])]
    assert "item_embedding.weight" in changed and "loc_head.weight" in changed
    # Two particles average two single-particle estimates: same order of magnitude.
    pyro.set_rng_seed(2)
    two = Trace_ELBO(num_particles=2).loss(
        module.model, module.guide, batch, KL_SCALE, INTEREST_SCALE
    )
    pyro.set_rng_seed(2)
    singles = [
        Trace_ELBO().loss(module.model, module.guide, batch, KL_SCALE, INTEREST_SCALE)
        for _ in range(2)
    ]
    assert two == pytest.approx(np.mean(singles), rel=1e-4)


# -- orthogonality ---------------------------------------------------------------------------


def test_orthogonality_penalty_zero_for_orthonormal_prototypes():
    module = make_module("sigma")
    assert module.interests.orthogonality_penalty().item() == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        # Any orthonormal directions (norms do not matter: prototypes are normalised).
        module.interests.raw_prototypes.copy_(
            torch.eye(K, HIDDEN) * torch.tensor([[2.0], [0.5], [7.0]])
        )
    assert module.interests.orthogonality_penalty().item() == pytest.approx(0.0, abs=1e-6)


def test_orthogonality_penalty_positive_otherwise():
    module = make_module("sigma")
    with torch.no_grad():
        module.interests.raw_prototypes.copy_(torch.ones(K, HIDDEN))
    # C C^T - I has K (K - 1) off-diagonal ones.
    assert module.interests.orthogonality_penalty().item() == pytest.approx(
        K * (K - 1) / K**2, rel=1e-5
    )
    with torch.no_grad():
        module.interests.raw_prototypes.copy_(torch.eye(K, HIDDEN))
        module.interests.raw_prototypes[1, 0] = 0.3
    penalty = module.interests.orthogonality_penalty()
    assert penalty.item() > 0
    penalty.backward()
    assert module.interests.raw_prototypes.grad.abs().sum() > 0

    # The model adds it as a factor weighted per token.
    batch = make_batch(seed=8)
    model_trace, _ = traces(module, batch, KL_SCALE, INTEREST_SCALE)
    factor = model_trace.nodes["orthogonality"]["log_prob_sum"].item()
    expected = -module.config.orthogonality_weight * batch.num_tokens * penalty.item()
    assert factor == pytest.approx(expected, rel=1e-5)
    assert factor < 0


def test_zero_orthogonality_weight_drops_the_factor():
    module = make_module("sigma", orthogonality_weight=0.0)
    model_trace, _ = traces(module, make_batch(), KL_SCALE, INTEREST_SCALE)
    assert "orthogonality" not in model_trace.nodes


def test_interest_subsample_is_scaled_and_off_in_eval():
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, 21, size=rng.integers(3, 8)) for _ in range(10)]
    batch = next(iter(TrainingBatches(seqs, 10, 8, shuffle=False)))
    module = SigmaModule(
        20, ModelConfig(hidden_size=8, num_heads=2, max_seq_length=8, interest_subsample=4)
    ).train()
    model_trace = poutine.trace(module.model).get_trace(batch, 0.1, 0.2)
    drawn = model_trace.nodes["interest_tokens"]["value"]
    assert drawn.shape == (4,) and len(set(drawn.tolist())) == 4
    observed = model_trace.nodes["interest_next_item"]
    assert torch.equal(observed["value"], (batch.targets[batch.mask] - 1)[drawn])
    # 4 of the real positions stand in for all of them: Pyro scales their terms up.
    assert float(observed["scale"]) == pytest.approx(0.2 * batch.num_tokens / 4)
    module.eval()
    full = poutine.trace(module.model).get_trace(batch, 0.1, 0.2)
    assert full.nodes["interest_next_item"]["value"].shape[0] == batch.num_tokens


@pytest.mark.parametrize("decay", [1.0, 0.7])
def test_interests_at_last_equal_the_prefix_interests_at_the_last_position(decay):
    module = make_module("sigma", interest_decay=decay).eval()
    batch = make_batch(seed=9)
    vectors = module.interest_item_vectors(batch.items)
    every = module.interests(vectors, batch.mask)
    last = module.interests.at_last(vectors, batch.mask)
    rows, position = torch.arange(batch.items.shape[0]), batch.mask.sum(1) - 1
    for name in ("intensity", "loc", "component_loc", "scale"):
        torch.testing.assert_close(
            getattr(last, name),
            getattr(every, name)[rows, position],
            rtol=1e-5,
            atol=1e-5,
            msg=name,
        )


def test_decayed_interests_weigh_recent_items_more():
    module = make_module("sigma", interest_decay=0.5).eval()
    vectors = torch.randn(1, 3, HIDDEN)
    mask = torch.ones(1, 3, dtype=torch.bool)
    interests = module.interests(vectors, mask)
    a = module.interests.assign(vectors)[0]  # [3, K]
    w = torch.tensor([0.25, 0.5, 1.0]).unsqueeze(-1) * a  # decay^(2 - s)
    expected = (w.unsqueeze(-1) * vectors[0].unsqueeze(1)).sum(0) / w.sum(0).unsqueeze(-1)
    torch.testing.assert_close(interests.loc[0, 2], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(interests.intensity[0, 2], w.sum(0) / 1.75, rtol=1e-5, atol=1e-6)


def test_balance_and_sharpness_penalties():
    from sigma_pyro.nn.interests import balance_penalty, sharpness_penalty

    assert balance_penalty(torch.full((5, 4), 0.25)).item() == pytest.approx(0.0, abs=1e-7)
    lopsided = torch.tensor([[1.0, 0.0, 0.0, 0.0]]).expand(5, 4)
    # usage (1, 0, 0, 0): std sqrt(3)/4 over mean 1/4.
    assert balance_penalty(lopsided).item() == pytest.approx(3**0.5, rel=1e-5)
    mask = torch.tensor([[True, True, False]])
    hard = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]])
    assert sharpness_penalty(hard, mask).item() == pytest.approx(0.0, abs=1e-6)
    flat = torch.full((1, 3, 2), 0.5)
    assert sharpness_penalty(flat, mask).item() == pytest.approx(math.log(2), rel=1e-5)

    module = make_module("sigma", balance_weight=0.3, sharpness_weight=0.7).eval()
    batch = make_batch(seed=8)
    model_trace, _ = traces(module, batch, KL_SCALE, INTEREST_SCALE)
    interests = module.extract_interests(batch.items, batch.mask)
    rows, last = torch.arange(batch.items.shape[0]), batch.mask.sum(1) - 1
    expected = {
        "balance": 0.3 * balance_penalty(interests.intensity[rows, last]),
        "sharpness": 0.7 * sharpness_penalty(interests.assignment, batch.mask),
    }
    for name, value in expected.items():
        factor = model_trace.nodes[name]["log_prob_sum"].item()
        assert factor == pytest.approx(-batch.num_tokens * value.item(), rel=1e-5), name


def test_kl_scale_is_in_elbo_units():
    from sigma_pyro.config import Config
    from sigma_pyro.inference.schedules import kl_scale

    config = Config()
    config.train.kl_cap, config.train.kl_anneal_steps = 0.5, 10
    for hidden in (16, 128):
        # The weight of the summed KL per token, whatever the latent size.
        config.model.hidden_size = hidden
        assert kl_scale(config, 4) == pytest.approx(0.25)
        assert kl_scale(config, 100) == pytest.approx(0.5)


def test_decoder_reads_z_without_dropout_unless_asked():
    """z is a latent sample, not an embedding: the decoder drops none of its coordinates by
    default, while the encoder still drops its embedded inputs at --hidden-dropout."""
    z = torch.randn(4, 6, 16)

    def decoder_outputs(config):
        torch.manual_seed(0)
        module = SigmaModule(20, config).train()
        lengths = torch.full((4,), 6)
        return module.decode(z, lengths), module.decode(z, lengths)

    first, second = decoder_outputs(
        ModelConfig(hidden_size=16, num_heads=2, hidden_dropout=0.0, prior="normal")
    )
    assert torch.equal(first, second)
    first, second = decoder_outputs(
        ModelConfig(
            hidden_size=16,
            num_heads=2,
            hidden_dropout=0.0,
            decoder_input_dropout=0.5,
            prior="normal",
        )
    )
    assert not torch.allclose(first, second)
    module = SigmaModule(20, ModelConfig(hidden_size=16, num_heads=2, hidden_dropout=0.4))
    assert module.encoder.dropout.p == 0.4 and module.decoder.dropout.p == 0.0


def test_a_learned_interest_temperature_trains_and_a_fixed_one_is_not_saved():
    fixed = make_module("sigma", interest_temperature=0.1)
    assert "interest_log_temperature" not in fixed.state_dict()
    assert float(fixed.interest_temperature) == pytest.approx(0.1)

    learned = make_module("sigma", interest_temperature=0.1, learn_interest_temperature=True)
    learned.train()
    batch = make_batch(seed=6, users=16)
    pyro.clear_param_store()
    svi = SVI(
        learned.model,
        learned.guide,
        pyro.optim.ClippedAdam({"lr": 0.05, "clip_norm": 10.0}),
        Trace_ELBO(),
    )
    for _ in range(20):
        svi.step(batch, KL_SCALE, 1.0)
    moved = learned.interest_temperature.item()
    assert abs(moved - 0.1) > 0.01, moved
    restored = make_module("sigma", interest_temperature=0.1, learn_interest_temperature=True)
    restored.load_state_dict(learned.state_dict())
    assert restored.interest_temperature.item() == moved


def test_assignment_temperature_anneals_geometrically_then_holds():
    from sigma_pyro.config import Config
    from sigma_pyro.inference.schedules import assignment_temperature

    config = Config()
    m = config.model
    m.assignment_temperature, m.assignment_temperature_start = 0.1, 1.0
    m.assignment_anneal_epochs = 0
    assert assignment_temperature(config, 0) == pytest.approx(0.1)  # no annealing
    m.assignment_anneal_epochs = 10
    taus = [assignment_temperature(config, epoch) for epoch in range(15)]
    assert taus[0] == pytest.approx(1.0)
    assert taus[5] == pytest.approx(math.sqrt(0.1))
    assert taus[10:] == pytest.approx([0.1] * 5)
    assert all(a > b for a, b in zip(taus[:10], taus[1:11], strict=True))


def test_main_head_nll_sums_the_normaliser_over_item_chunks():
    from helpers import make_sequences
    from sigma_pyro.config import EvalConfig
    from sigma_pyro.evaluation.interest_head import main_head_nll
    from sigma_pyro.evaluation.predict import last_position_representation

    module = make_module("normal").eval()
    histories = make_sequences(seed=3, users=6)
    target = torch.tensor([0, 5, 24, 3, 3, 17])
    chunked = main_head_nll(module, histories, target, EvalConfig(item_chunk_size=7), "cpu")
    logits = module.item_logits(last_position_representation(module, histories, "cpu"))
    exact = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    assert torch.allclose(chunked, exact, atol=1e-5)
