"""Small modules, batches and traces that the model-level tests share."""

from __future__ import annotations

import numpy as np
import torch
from pyro import poutine

from sigma_pyro.config import ModelConfig
from sigma_pyro.data.batching import SequenceBatch, TrainingBatches
from sigma_pyro.data.dataset import PADDING_ID
from sigma_pyro.nn.module import SigmaModule

NUM_ITEMS, HIDDEN, MAX_LEN, K, PSEUDO = 25, 16, 12, 3, 5


def make_module(
    prior: str = "sigma", seed: int = 0, num_items: int = NUM_ITEMS, **overrides
) -> SigmaModule:
    """A small module initialised from ``seed``; dropout is off so that traces are exact."""
    torch.manual_seed(seed)
    settings = dict(
        prior=prior,
        hidden_size=HIDDEN,
        num_heads=2,
        max_seq_length=MAX_LEN,
        num_interests=K,
        pseudo_inputs=PSEUDO,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )
    return SigmaModule(num_items, ModelConfig(**{**settings, **overrides}))


def make_sequences(seed: int = 0, users: int = 8, max_length: int = 9) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        rng.integers(1, NUM_ITEMS + 1, size=int(rng.integers(3, max_length + 1)))
        for _ in range(users)
    ]


def make_batch(seed: int = 0, users: int = 8, max_length: int = 9) -> SequenceBatch:
    seqs = make_sequences(seed, users, max_length)
    batch = next(iter(TrainingBatches(seqs, users, MAX_LEN, shuffle=False)))
    assert batch.items.shape[0] == users
    assert not batch.mask.all(), "the test batch needs padding"
    return batch


def widen(batch: SequenceBatch, extra: int) -> SequenceBatch:
    """The same batch with ``extra`` more all-padding columns."""
    pad = torch.full((batch.items.shape[0], extra), PADDING_ID, dtype=torch.long)
    return SequenceBatch(
        torch.cat([batch.items, pad], 1),
        torch.cat([batch.targets, pad], 1),
        torch.cat([batch.mask, pad.bool()], 1),
        batch.index,
    )


def traces(module, batch, kl_scale=1.0, interest_scale=1.0, *, guide=None, model=None):
    """``(model_trace, guide_trace)``: the guide traced and the model replayed against it,
    log-densities computed, as Trace_ELBO builds them. ``guide`` and ``model`` stand in for
    the module's own, for tests that wrap or pin them."""
    guide_trace = poutine.trace(guide or module.guide).get_trace(batch, kl_scale, interest_scale)
    replayed = poutine.replay(model or module.model, trace=guide_trace)
    model_trace = poutine.trace(replayed).get_trace(batch, kl_scale, interest_scale)
    guide_trace.compute_log_prob()
    model_trace.compute_log_prob()
    return model_trace, guide_trace


def run_main(argv) -> tuple[int, str, str]:
    """The CLI in-process: exit code, stdout and stderr."""
    import contextlib
    import io

    from sigma_pyro.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


# Settings of a synthetic run that trains one epoch in about a second.
TINY = {
    "synthetic_users": 80,
    "synthetic_items": 40,
    "synthetic_categories": 4,
    "hidden_size": 16,
    "num_heads": 2,
    "max_seq_length": 8,
    "batch_size": 32,
    "num_interests": 4,
    "epochs": 1,
    "progress": False,
}


# The same small synthetic run as command-line flags, for sigma-pyro train.
TINY_FLAGS = [
    "--synthetic-users",
    "150",
    "--synthetic-items",
    "60",
    "--synthetic-categories",
    "4",
    "--hidden-size",
    "16",
    "--num-heads",
    "2",
    "--max-seq-length",
    "10",
    "--batch-size",
    "64",
]
