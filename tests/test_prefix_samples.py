"""``--training-samples prefixes``: every prefix of a training sequence is a sample of its
own, scored at its last position, and holds the same targets as the whole sequences."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import TINY_FLAGS, make_module, make_sequences, run_main, traces
from sigma_pyro.config import load_config
from sigma_pyro.data.batching import TrainingBatches
from sigma_pyro.data.dataset import PADDING_ID
from sigma_pyro.runtime.resources import estimate_training_memory


@pytest.mark.parametrize("max_length", [3, 50])
@pytest.mark.parametrize("shuffle", [True, False])
def test_each_prefix_is_one_sample_scored_at_its_last_position(max_length, shuffle):
    rng = np.random.default_rng(1)
    train = [rng.integers(1, 40, size=rng.integers(1, 12)) for _ in range(50)]
    batches = TrainingBatches(train, 16, max_length, seed=2, shuffle=shuffle, samples="prefixes")
    seen = []
    for batch in batches:
        scored = batch.scored
        assert (scored.sum(dim=1) == 1).all()
        last = batch.mask.sum(dim=1) - 1
        assert scored[torch.arange(len(last)), last].all()
        for b, row in enumerate(batch.index.tolist()):
            inputs = batch.items[b][batch.mask[b]].numpy()
            end = next(
                end
                for end in range(1, len(train[row]))
                if (row, end) not in seen
                and np.array_equal(inputs, train[row][:end][-max_length:])
                and train[row][end] == int(batch.targets[b, last[b]])
            )
            seen.append((row, end))
    expected = [(r, end) for r, seq in enumerate(train) for end in range(1, len(seq))]
    assert sorted(seen) == expected
    assert len(batches) == -(-len(expected) // 16)


def test_the_token_cap_counts_the_scored_positions_of_prefix_samples():
    rng = np.random.default_rng(0)
    train = [rng.integers(1, 40, size=30) for _ in range(20)]
    # A prefix sample scores one position however long it is: 64 rows fit a cap of 64.
    capped = TrainingBatches(train, 64, 30, max_tokens=64, samples="prefixes")
    assert all(batch.num_targets == batch.items.shape[0] <= 64 for batch in capped)
    assert len(capped) == len(TrainingBatches(train, 64, 30, samples="prefixes"))


@pytest.mark.parametrize("position_encoding", ["absolute", "relative"])
def test_prefix_samples_score_what_whole_sequences_score(position_encoding):
    # Without dropout, the deterministic twin's next-item log-likelihood of a sequence is
    # the sum over its prefix samples: the same targets from the same causal states.
    seqs = make_sequences(3, users=6)
    module = make_module("deterministic", position_encoding=position_encoding)
    total = {}
    for samples in ("sequences", "prefixes"):
        total[samples] = sum(
            traces(module, batch)[0].nodes["next_item"]["log_prob_sum"].item()
            for batch in TrainingBatches(seqs, 4, 50, shuffle=False, samples=samples)
        )
    assert total["prefixes"] == pytest.approx(total["sequences"], rel=1e-5)


def test_a_prefix_sample_with_interests_trains_a_finite_elbo():
    seqs = make_sequences(4, users=6)
    module = make_module("sigma")
    batch = next(iter(TrainingBatches(seqs, 32, 50, shuffle=False, samples="prefixes")))
    assert (batch.targets[~batch.scored] == PADDING_ID).all()
    model_trace, guide_trace = traces(module, batch)
    assert model_trace.nodes["next_item"]["value"].shape == (batch.items.shape[0],)
    elbo = sum(
        site["log_prob_sum"] for site in model_trace.nodes.values() if site["type"] == "sample"
    ) - sum(site["log_prob_sum"] for site in guide_trace.nodes.values() if site["type"] == "sample")
    assert torch.isfinite(elbo)


def test_unknown_samples_are_refused():
    with pytest.raises(ValueError, match="samples"):
        TrainingBatches([np.array([1, 2])], 2, 5, samples="windows")


def test_training_on_prefix_samples_from_the_command_line(tmp_path):
    steps = {}
    for samples in ("sequences", "prefixes"):
        out = tmp_path / samples
        flags = [*TINY_FLAGS, "--no-progress", "--epochs", "1", "--training-samples", samples]
        code, _, stderr = run_main(["train", *flags, "--out", out])
        assert code == 0, stderr
        steps[samples] = int(pd.read_csv(out / "history.csv")["step"].iloc[0])
        saved = json.loads((out / "model.json").read_text())["config"]["train"]
        assert saved["training_samples"] == samples
    # Batches of 64 prefixes hold fewer targets than batches of 64 whole sequences.
    assert steps["prefixes"] > 3 * steps["sequences"]


def test_the_memory_estimate_scores_one_position_a_prefix_sample():
    config = load_config("beauty")
    config.train.max_batch_tokens = 0
    lengths = [50] * 22_000
    sequences = estimate_training_memory(config, 12_000, lengths).total
    config.train.training_samples = "prefixes"
    prefixes = estimate_training_memory(config, 12_000, lengths).total
    # The scores over 12k items, about half the estimate, shrink from 256 x 50 positions to
    # 256 rows; the networks still run over 256 x 50 positions.
    assert 0.3 * sequences < prefixes < 0.6 * sequences
