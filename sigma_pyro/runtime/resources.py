"""A memory check before training, so that a run too large for the machine fails at once
with a suggestion instead of crashing (or swapping the machine to a halt) minutes later.

The estimate counts only the tensors that grow with the batch, the sequence length and the
catalog: the item scores of every real position, the transformers' activations, the
per-position interests, and the parameters with their gradients and Adam moments. The
constants were fitted to the peak memory growth of one SVI step on the CPU, which they
match within 5% or overestimate by up to about 30% for catalogs of 3k-12k items, hidden
size 128 and batches of 128-256 sequences of 30-50 items, with either prior.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import resource
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sigma_pyro.config import Config
from sigma_pyro.errors import ConfigError

MEMORY_LIMIT_ENV = "SIGMA_PYRO_MEMORY_LIMIT_MB"
_FLOAT = 4  # bytes per float32
# [scored positions x items] tensors alive at the peak. The full softmax writes its logits
# and then their gradient into one reused workspace (sigma_pyro.nn.output_layer): measured
# growth was 1-2 copies. The sampled softmax keeps its logits, their log-softmax, and their
# gradients and temporaries.
_SCORE_COPIES = {"full": 2, "sampled": 6}
_PER_LAYER = 30  # D-wide tensors per token one pre-norm block keeps for backward
_OUTSIDE_LAYERS = 6  # D-wide tensors per token outside the blocks (embeddings, z)
_PER_INTEREST = 22  # D-wide tensors per token and interest (extractor and prior)
_KEPT_FOR_BACKWARD = 3  # a small tensor, what is derived from it, and its gradient
_MEMINFO = Path("/proc/meminfo")


@dataclass
class MemoryEstimate:
    total: int  # bytes
    batch_size: int
    length: int


def estimate_training_memory(
    config: Config, num_items: int, input_lengths: Sequence[int]
) -> MemoryEstimate:
    """Peak bytes of one training step on the largest batch, or of one evaluation chunk if
    that is larger. ``input_lengths`` are the lengths of the training inputs (each training
    sequence but its last item)."""
    from sigma_pyro.models.priors import PRIORS  # late: priors import the nn package

    m, t, e = config.model, config.train, config.eval
    clipped = np.minimum(np.asarray(input_lengths, dtype=np.int64), m.max_seq_length)
    batch = max(1, min(t.batch_size, len(clipped)))
    length = max(1, int(clipped.max(initial=1)))
    # Padded positions run through the networks; only real ones are scored over the catalog,
    # and no batch has more of them than the longest inputs together.
    tokens = batch * length
    scored_tokens = int(np.sort(clipped)[-batch:].sum())
    if t.training_samples == "prefixes":
        # A prefix sample scores its last position only; the cap counts scored positions.
        batch = batch if t.max_batch_tokens <= 0 else max(1, min(batch, t.max_batch_tokens))
        tokens, scored_tokens = batch * length, batch
    elif t.max_batch_tokens > 0:
        # Length-sorted batches stop at the token cap, so padding adds little to it.
        cap = max(t.max_batch_tokens, length)
        batch = max(1, min(batch, cap // length))
        tokens, scored_tokens = min(tokens, cap), min(scored_tokens, cap)
    d, k = m.hidden_size, m.num_interests
    layers = m.num_layers + m.decoder_layers
    scored = min(num_items, m.negatives + 1) if m.likelihood == "sampled" else num_items
    activations = (
        _SCORE_COPIES[m.likelihood] * scored_tokens * scored
        + tokens * d * (_PER_LAYER * layers + _OUTSIDE_LAYERS)
        + _KEPT_FOR_BACKWARD * layers * tokens * m.num_heads * length  # attention weights
    )
    if PRIORS[m.prior].requires_interests:
        # Plus the cosine scores of K interests at each position the interest head scores
        # (its subsample of the real positions, or of the last ones).
        scored = scored_tokens if m.interest_positions == "all" else batch
        if m.interest_subsample > 0:
            scored = min(scored, m.interest_subsample)
        activations += _PER_INTEREST * tokens * k * d + _KEPT_FOR_BACKWARD * scored * k * num_items
    parameters = (num_items + 1) * (d + 1) + layers * 12 * d * d + 2 * m.max_seq_length * d
    evaluation = _KEPT_FOR_BACKWARD * e.eval_batch_size * min(e.item_chunk_size, num_items)
    # Weights, gradients and the two Adam moments. Trace_ELBO runs backward once per particle,
    # so particles do not add up.
    total = (4 * parameters + max(activations, evaluation)) * _FLOAT
    return MemoryEstimate(total, batch, length)


def available_memory(device: str) -> tuple[int, str] | None:
    """Bytes available for training on ``device`` and where that figure comes from, or None
    when it cannot be known (then nothing is checked)."""
    limit = os.environ.get(MEMORY_LIMIT_ENV)
    if limit:
        try:
            megabytes = float(limit)
        except ValueError:
            raise ConfigError(f"{MEMORY_LIMIT_ENV}={limit!r}: expected a number of MB") from None
        return int(megabytes * 2**20), MEMORY_LIMIT_ENV
    target = torch.device(device)
    if target.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(target)
        return free, f"free memory of {target}"
    if target.type == "cpu" and _MEMINFO.is_file():
        for line in _MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"
    return None


def check_training_memory(
    config: Config, num_items: int, input_lengths: Sequence[int]
) -> MemoryEstimate:
    """Raise ConfigError, with a batch size that would fit, when training cannot fit."""
    estimate = estimate_training_memory(config, num_items, input_lengths)
    available = available_memory(config.train.device)
    if available is None or estimate.total <= available[0]:
        return estimate
    budget, source = available
    suggestion = "lower --max-seq-length, --hidden-size or --eval-batch-size"
    batch = config.train.batch_size // 2
    while batch >= 1:
        smaller = dataclasses.replace(
            config, train=dataclasses.replace(config.train, batch_size=batch)
        )
        if estimate_training_memory(smaller, num_items, input_lengths).total <= budget:
            suggestion = f"try --batch-size {batch} or a smaller --max-seq-length"
            break
        batch //= 2
    raise ConfigError(
        f"training needs about {_size(estimate.total)} (batches of {estimate.batch_size} "
        f"sequences x {estimate.length} positions over {num_items:,} items) but only "
        f"{_size(budget)} is available ({source}); {suggestion}"
    )


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def peak_rss_mb() -> float:
    """The largest resident memory this process has had so far, in MB."""
    # ru_maxrss is in KiB on Linux and bytes on macOS.
    scale = 1 / 1024 if platform.system() == "Linux" else 1 / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
