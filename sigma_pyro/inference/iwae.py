"""Held-out log-likelihood by importance weighting (the IWAE bound, Burda et al. 2016).

For a sequence x and S draws z_s ~ q(z | x) from the guide,

    log p(x) >= log (1/S) sum_s exp(log p(x, z_s) - log q(z_s | x)),

a bound that tightens as S grows (S = 1 is the ELBO). Every prior shares the guide and the
next-item likelihood, so this is the number on which priors can be compared as density
models: a better prior leaves less of the ELBO's gap between the posterior and itself.

The weights are read off Pyro traces (guide traced, model replayed) with unannealed scales.
What is scored: every next item of the sequence's last ``max_seq_length + 1`` items, given the
items before it (the model's window), with the latent z at every position. The interest
site of SIGMA's MIE part is left out by default: it scores the next items a second time,
with a head that the main likelihood does not use, so including it would change what is
being measured from one prior to the next. A model trained with
the sampled softmax (``likelihood: sampled``) is scored with the exact categorical: the
sampled one is a training device whose value depends on the negatives drawn.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pyro.distributions import Unit

from sigma_pyro.data.batching import SequenceBatch, TrainingBatches
from sigma_pyro.inference.objective import traces
from sigma_pyro.models.sequential_vae import NOTHING_PRECOMPUTED, Precomputed

MAIN_SITES = ("z", "next_item")
INTEREST_SITES = ("interest_next_item",)


def _per_sequence(site, mask: torch.Tensor) -> torch.Tensor:
    """A site's log-density summed per sequence, [B]."""
    log_prob = site["log_prob"]
    rows = mask.shape[0]
    if log_prob.dim() == 1 and log_prob.shape[0] == int(mask.sum()):
        # The tokens plates: real positions in row-major order of the mask.
        owner = mask.nonzero(as_tuple=True)[0]
        return torch.zeros(rows, dtype=log_prob.dtype, device=log_prob.device).index_add_(
            0, owner, log_prob
        )
    return log_prob.reshape(rows, -1).sum(dim=1)


@torch.no_grad()
def log_weights(
    module,
    batch: SequenceBatch,
    include_interests: bool = False,
    precomputed: Precomputed = NOTHING_PRECOMPUTED,
) -> torch.Tensor:
    """One importance weight log p(x, z) - log q(z | x) per sequence, [B], z ~ q."""
    model_trace, guide_trace = traces(module, batch, 1.0, 1.0, precomputed)
    sites = MAIN_SITES + (INTEREST_SITES if include_interests else ())
    weight = torch.zeros(batch.items.shape[0], device=batch.mask.device)
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        for name, site in trace.nodes.items():
            # Factors (the orthogonality penalty) regularise parameters; they are no density.
            if site["type"] != "sample" or name not in sites or isinstance(site["fn"], Unit):
                continue
            weight += sign * _per_sequence(site, batch.mask)
    return weight


def _deterministic_parts(module, batch: SequenceBatch) -> Precomputed:
    """In eval mode the encoder and the interests are deterministic functions of the batch:
    computed once here, not 2S times by the guide and model of S draws. The exact softmax
    is forced because the sampled one is a training device whose value depends on the
    negatives drawn."""
    interests = (
        module.extract_interests(batch.items, batch.mask)
        if module.prior.requires_interests
        else None
    )
    return Precomputed(encoding=module.encode(batch.items), interests=interests, likelihood="full")


def iwae_log_likelihood(
    module,
    sequences: list[np.ndarray],
    num_samples: int = 20,
    batch_size: int = 256,
    include_interests: bool = False,
    device="cpu",
) -> dict:
    """IWAE estimate of each sequence's log-likelihood with ``num_samples`` draws.

    ``sequences`` are full sequences of internal item ids (for the test split: the history
    followed by the test item, which is then the final target). Sequences of fewer than two
    items predict nothing and are skipped. Returns ``per_sequence`` (array over the scored
    sequences, in input order), ``per_token`` (total log-likelihood over total predicted
    items) and ``num_tokens``. Runs the module in eval mode (no dropout).
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, got {num_samples}")
    rows, values, tokens = [], [], 0
    with module.evaluating(), torch.no_grad():
        window = module.config.max_seq_length
        for batch in TrainingBatches(sequences, batch_size, window, shuffle=False):
            batch = batch.to(device)
            precomputed = _deterministic_parts(module, batch)
            draws = torch.stack(
                [
                    log_weights(module, batch, include_interests, precomputed)
                    for _ in range(num_samples)
                ]
            )  # [S, B]
            values.append((draws.logsumexp(dim=0) - math.log(num_samples)).cpu())
            rows.append(batch.index.cpu())
            tokens += batch.num_tokens
    if not values:
        raise ValueError("no sequence has two or more items to score")
    per_sequence = torch.cat(values)[torch.cat(rows).argsort()].double().numpy()
    return {
        "per_sequence": per_sequence,
        "per_token": float(per_sequence.sum() / tokens),
        "num_tokens": tokens,
    }
