"""No leakage: what the model sees at position t depends only on items at positions <= t.

Every network output used at position t (the guide's q(z_t), the decoder's representation,
the interests and the prior over z_t) must be unchanged when the items after t (and the
padding) change. The data side must never put a held-out target into the history that
predicts it, and the training targets must be exactly the next items.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import HIDDEN, MAX_LEN, make_module
from sigma_pyro.data.batching import TrainingBatches, pad_right
from sigma_pyro.data.dataset import PADDING_ID, ItemVocabulary, SequenceDataset
from sigma_pyro.models.priors import PriorInputs
from sigma_pyro.nn.module import SigmaModule

NUM_ITEMS = 30
ATOL = 1e-5


def noisy_module(
    prior: str, seed: int = 0, position_encoding: str = "absolute", frequency_mix: float = 0.0
) -> SigmaModule:
    # Non-zero dropout everywhere: eval() must switch it off for the checks to be exact.
    module = make_module(
        prior,
        seed,
        num_items=NUM_ITEMS,
        num_layers=2,
        decoder_layers=2,
        num_interests=3,
        hidden_dropout=0.3,
        attention_dropout=0.3,
        position_encoding=position_encoding,
        frequency_mix=frequency_mix,
    )
    # Move item embeddings away from the tiny init so that items really differ, and the
    # distance biases away from zero so that they shape attention.
    with torch.no_grad():
        module.item_embedding.weight[1:].normal_(0.0, 1.0)
        for transformer in (module.encoder, module.decoder):
            if position_encoding == "relative":
                transformer.distance_bias.normal_(0.0, 1.0)
            for block in transformer.blocks:
                if block.frequency_filter is not None:
                    block.frequency_filter.sqrt_beta.normal_(0.0, 1.0)
    return module.eval()


def random_items(generator: torch.Generator, batch: int = 5, length: int = MAX_LEN) -> torch.Tensor:
    """Right-padded item ids [B, L], each row at least one real item, some rows full."""
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    lengths[0] = length
    items = torch.randint(1, NUM_ITEMS + 1, (batch, length), generator=generator)
    items[torch.arange(length).unsqueeze(0) >= lengths.unsqueeze(1)] = PADDING_ID
    return items


def perturb_after(
    items: torch.Tensor, t: int, generator: torch.Generator, keep_lengths: bool = False
) -> torch.Tensor:
    """Change everything after position t: new items, and padding moved around (a row may
    become longer or shorter after t, unless ``keep_lengths``). Rows keep right padding."""
    out = items.clone()
    batch, length = items.shape
    for row in range(batch):
        real_up_to_t = int((items[row, : t + 1] != PADDING_ID).sum())
        if real_up_to_t < t + 1:
            continue  # the row already ended at or before t: keep it padded after t
        new_length = int(torch.randint(t + 1, length + 1, (1,), generator=generator))
        if keep_lengths:
            new_length = int((items[row] != PADDING_ID).sum())
        fresh = torch.randint(1, NUM_ITEMS + 1, (length,), generator=generator)
        out[row, t + 1 :] = fresh[t + 1 :]
        out[row, new_length:] = PADDING_ID
    # Make sure at least one row really changed after t.
    if t + 1 < length and torch.equal(out, items):
        out[0, t + 1 :] = (items[0, t + 1 :] % NUM_ITEMS) + 1
    return out


def assert_prefix_equal(a: torch.Tensor, b: torch.Tensor, t: int, what: str) -> None:
    torch.testing.assert_close(
        a[:, : t + 1],
        b[:, : t + 1],
        rtol=0.0,
        atol=ATOL,
        msg=lambda m: f"{what} leaks positions > {t}: {m}",
    )


def assert_suffix_changed(a: torch.Tensor, b: torch.Tensor, t: int, what: str) -> None:
    """Sanity: the perturbation is visible after t, so the prefix check is not vacuous."""
    if t + 1 < a.shape[1]:
        assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :], atol=ATOL), (
            f"{what}: perturbing positions > {t} changed nothing at all"
        )


CASES = [(seed, t) for seed in range(3) for t in (0, 3, 7, MAX_LEN - 2)]


@pytest.mark.parametrize("prior", ["sigma", "normal"])
def test_eval_mode_is_deterministic(prior):
    module = noisy_module(prior)
    items = random_items(torch.Generator().manual_seed(0))
    loc1, scale1 = module.encode(items)
    loc2, scale2 = module.encode(items)
    assert torch.equal(loc1, loc2) and torch.equal(scale1, scale2)
    module.train()
    loc3, _ = module.encode(items)
    assert not torch.allclose(loc1, loc3), "dropout should be active in train mode"


@pytest.mark.parametrize("prior", ["sigma", "normal"])
@pytest.mark.parametrize("seed,t", CASES)
@pytest.mark.parametrize("positions", ["absolute", "recency", "relative"])
@torch.no_grad()
def test_encoder_is_causal(prior, seed, t, positions):
    module = noisy_module(prior, seed, positions)
    g = torch.Generator().manual_seed(100 + seed)
    items = random_items(g)
    # Recency positions count back from the last item, so in training position t learns
    # how many items follow it (never which): only the items after t may change for it.
    changed = perturb_after(items, t, g, keep_lengths=positions == "recency")
    loc_a, scale_a = module.encode(items)
    loc_b, scale_b = module.encode(changed)
    assert loc_a.shape == (items.shape[0], MAX_LEN, HIDDEN)
    assert_prefix_equal(loc_a, loc_b, t, "encoder loc")
    assert_prefix_equal(scale_a, scale_b, t, "encoder scale")
    assert_suffix_changed(loc_a, loc_b, t, "encoder loc")


@pytest.mark.parametrize("seed,t", CASES)
@pytest.mark.parametrize("positions", ["absolute", "recency", "relative"])
@torch.no_grad()
def test_decoder_is_causal(seed, t, positions):
    module = noisy_module("normal", seed, positions)
    g = torch.Generator().manual_seed(200 + seed)
    z = torch.randn(4, MAX_LEN, HIDDEN, generator=g)
    z_changed = z.clone()
    z_changed[:, t + 1 :] = 10.0 * torch.randn(4, MAX_LEN - t - 1, HIDDEN, generator=g)
    full = torch.full((4,), MAX_LEN)
    out_a, out_b = module.decode(z, full), module.decode(z_changed, full)
    assert out_a.shape == z.shape
    assert_prefix_equal(out_a, out_b, t, "decoder output")
    assert_suffix_changed(out_a, out_b, t, "decoder output")
    # Item scores at position t derive from the decoder output at t alone.
    assert_prefix_equal(module.item_logits(out_a), module.item_logits(out_b), t, "item logits")


@pytest.mark.parametrize("seed,t", CASES)
@torch.no_grad()
def test_frequency_filter_is_causal(seed, t):
    """BSARec's filter is an FFT over the whole window; ours must still see only <= t."""
    module = noisy_module("normal", seed, "relative", frequency_mix=0.7)
    g = torch.Generator().manual_seed(250 + seed)
    items = random_items(g)
    changed = perturb_after(items, t, g)
    loc_a, _ = module.encode(items)
    loc_b, _ = module.encode(changed)
    assert_prefix_equal(loc_a, loc_b, t, "encoder loc with the frequency filter")
    assert_suffix_changed(loc_a, loc_b, t, "encoder loc with the frequency filter")
    z = torch.randn(4, MAX_LEN, HIDDEN, generator=g)
    z_changed = z.clone()
    z_changed[:, t + 1 :] = 10.0 * torch.randn(4, MAX_LEN - t - 1, HIDDEN, generator=g)
    full = torch.full((4,), MAX_LEN)
    out_a, out_b = module.decode(z, full), module.decode(z_changed, full)
    assert_prefix_equal(out_a, out_b, t, "decoder output with the frequency filter")
    assert_suffix_changed(out_a, out_b, t, "decoder output with the frequency filter")


@pytest.mark.parametrize("seed,t", CASES)
@torch.no_grad()
def test_interests_are_causal(seed, t):
    module = noisy_module("sigma", seed)
    g = torch.Generator().manual_seed(300 + seed)
    items = random_items(g)
    changed = perturb_after(items, t, g)
    a = module.extract_interests(items, items != PADDING_ID)
    b = module.extract_interests(changed, changed != PADDING_ID)
    assert a.intensity.shape == (items.shape[0], MAX_LEN, 3)
    assert a.loc.shape == (items.shape[0], MAX_LEN, 3, HIDDEN)
    assert_prefix_equal(a.intensity, b.intensity, t, "interest intensity")
    assert_prefix_equal(a.loc, b.loc, t, "interest loc")
    assert_prefix_equal(a.scale, b.scale, t, "interest scale")
    assert_prefix_equal(a.assignment, b.assignment, t, "interest assignment")
    assert_suffix_changed(a.loc, b.loc, t, "interest loc")


def prior_log_prob(module: SigmaModule, items: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """log p(z_bt | x_b,<=t) [B, L], with PriorInputs built exactly as the model builds them."""
    mask = items != PADDING_ID
    interests = module.extract_interests(items, mask) if module.prior.requires_interests else None
    prior = module.prior(
        PriorInputs(tuple(items.shape), module.latent_dim, interests, items.device)
    )
    assert tuple(prior.batch_shape) == tuple(items.shape)
    assert tuple(prior.event_shape) == (module.latent_dim,)
    return prior.log_prob(z)


@pytest.mark.parametrize("prior", ["sigma", "normal"])
@pytest.mark.parametrize("seed,t", CASES)
@torch.no_grad()
def test_prior_is_causal(prior, seed, t):
    module = noisy_module(prior, seed)
    g = torch.Generator().manual_seed(400 + seed)
    items = random_items(g)
    changed = perturb_after(items, t, g)
    z = torch.randn(items.shape[0], MAX_LEN, HIDDEN, generator=g)
    z_changed = z.clone()
    z_changed[:, t + 1 :] = 5.0 * torch.randn(items.shape[0], MAX_LEN - t - 1, HIDDEN, generator=g)
    lp_a = prior_log_prob(module, items, z)
    lp_b = prior_log_prob(module, changed, z_changed)
    assert torch.isfinite(lp_a[:, : t + 1]).all()
    assert_prefix_equal(lp_a, lp_b, t, f"{prior} prior log_prob")
    assert_suffix_changed(lp_a, lp_b, t, f"{prior} prior log_prob")


@torch.no_grad()
def test_sigma_prior_depends_on_current_prefix():
    """The mixture prior at t must use the items up to t (not be constant): changing the item
    at position t itself changes the prior there."""
    module = noisy_module("sigma")
    g = torch.Generator().manual_seed(7)
    items = random_items(g)
    items[0] = torch.randint(1, NUM_ITEMS + 1, (MAX_LEN,), generator=g)
    t = 4
    changed = items.clone()
    changed[0, t] = items[0, t] % NUM_ITEMS + 1
    z = torch.randn(items.shape[0], MAX_LEN, HIDDEN, generator=g)
    lp_a, lp_b = prior_log_prob(module, items, z), prior_log_prob(module, changed, z)
    torch.testing.assert_close(lp_a[0, :t], lp_b[0, :t], rtol=0.0, atol=ATOL)
    assert not torch.isclose(lp_a[0, t], lp_b[0, t])


# -- the data side -------------------------------------------------------------------------


def random_dataset(seed: int, num_users: int = 40) -> SequenceDataset:
    rng = np.random.default_rng(seed)
    raw = [f"r{i}" for i in range(25)]
    vocabulary = ItemVocabulary(raw)
    sequences = []
    for _ in range(num_users):
        length = int(rng.integers(3, 20))
        # Repeats allowed on purpose: a value check could not tell positions apart.
        sequences.append(rng.integers(1, len(raw) + 1, size=length).astype(np.int64))
    return SequenceDataset([f"u{i}" for i in range(num_users)], sequences, vocabulary)


@pytest.mark.parametrize("seed", range(4))
def test_leave_one_out_never_puts_a_target_in_its_history(seed):
    dataset = random_dataset(seed)
    split = dataset.leave_one_out()
    for user, seq in enumerate(dataset.sequences):
        n = len(seq)
        train = split.train[user]
        valid_history, test_history = split.valid_history[user], split.test_history[user]
        # Positions: valid target is seq[n-2], test target seq[n-1].
        assert len(valid_history) == n - 2, "valid history must end right before the valid target"
        assert len(test_history) == n - 1, "test history must end right before the test target"
        assert split.valid_target[user] == seq[n - 2]
        assert split.test_target[user] == seq[n - 1]
        # Histories are exact prefixes of the sequence.
        np.testing.assert_array_equal(valid_history, seq[: n - 2])
        np.testing.assert_array_equal(test_history, seq[: n - 1])
        # Training never sees either held-out position.
        assert len(train) <= n - 2
        np.testing.assert_array_equal(train, seq[: len(train)])
    assert len(split.valid_target) == len(split.test_target) == dataset.num_users


def test_each_target_directly_follows_its_history():
    """The item right after each history, at that position in the sequence, is its target."""
    dataset = random_dataset(11)
    split = dataset.leave_one_out()
    for user, seq in enumerate(dataset.sequences):
        assert seq[len(split.test_history[user])] == split.test_target[user]
        assert seq[len(split.valid_history[user])] == split.valid_target[user]


@pytest.mark.parametrize("max_length", [3, 6, 50])
@pytest.mark.parametrize("shuffle", [True, False])
def test_training_targets_are_next_items(max_length, shuffle):
    dataset = random_dataset(5, num_users=60)
    train = dataset.leave_one_out().train
    batches = TrainingBatches(train, batch_size=8, max_length=max_length, seed=3, shuffle=shuffle)
    seen_rows = []
    for batch in batches:
        assert batch.items.shape == batch.targets.shape == batch.mask.shape
        assert batch.items.shape[1] <= max_length
        for b, row in enumerate(batch.index.tolist()):
            seen_rows.append(row)
            seq = train[row]
            n_inputs = min(len(seq) - 1, max_length)
            # The mask marks exactly the real positions, which come first (right padding).
            expected_mask = torch.arange(batch.items.shape[1]) < n_inputs
            assert torch.equal(batch.mask[b], expected_mask)
            assert (batch.items[b][~batch.mask[b]] == PADDING_ID).all()
            assert (batch.targets[b][~batch.mask[b]] == PADDING_ID).all()
            # The most recent items are kept: inputs are seq[-n-1:-1], targets seq[-n:].
            items = batch.items[b, :n_inputs].numpy()
            targets = batch.targets[b, :n_inputs].numpy()
            np.testing.assert_array_equal(items, seq[len(seq) - 1 - n_inputs : len(seq) - 1])
            np.testing.assert_array_equal(targets, seq[len(seq) - n_inputs :])
            # Target at t is the input at t + 1 of the same sequence.
            np.testing.assert_array_equal(targets[:-1], items[1:])
            assert targets[-1] == seq[-1]
    expected_rows = sorted(i for i, s in enumerate(train) if len(s) >= 2)
    assert sorted(seen_rows) == expected_rows, "every trainable sequence appears exactly once"


def test_training_batches_skip_sequences_without_a_next_item():
    train = [np.array([1]), np.array([2, 3]), np.array([4, 5, 6])]
    rows = sorted(int(r) for batch in TrainingBatches(train, 2, 10) for r in batch.index)
    assert rows == [1, 2]


def test_pad_right_keeps_most_recent_items():
    padded = pad_right([np.array([1, 2, 3, 4, 5]), np.array([6])], max_length=3)
    assert padded.tolist() == [[3, 4, 5], [6, 0, 0]]


def test_token_cap_bounds_real_positions_and_keeps_every_sequence():
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, 50, size=rng.integers(2, 40)) for _ in range(300)]
    capped = TrainingBatches(seqs, 64, 30, seed=1, max_tokens=200)
    seen = []
    for batch in capped:
        # A single sequence longer than the cap still forms its own batch.
        assert batch.num_tokens <= 200 or batch.items.shape[0] == 1
        assert batch.items.shape[0] <= 64
        seen += batch.index.tolist()
    assert sorted(seen) == list(range(300))
    uncapped = TrainingBatches(seqs, 64, 30, seed=1)
    assert len(capped) > len(uncapped)


@torch.no_grad()
def test_recency_positions_see_how_many_items_follow_and_the_others_do_not():
    g = torch.Generator().manual_seed(5)
    items = random_items(g)
    shorter = items.clone()
    shorter[0, -3:] = PADDING_ID  # the same first items, three fewer after them
    for positions, sees_the_length in (("absolute", False), ("relative", False), ("recency", True)):
        module = noisy_module("normal", 0, positions)
        loc_a, loc_b = module.encode(items)[0][0, :5], module.encode(shorter)[0][0, :5]
        assert (not torch.allclose(loc_a, loc_b, atol=ATOL)) == sees_the_length, positions
