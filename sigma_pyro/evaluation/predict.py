"""Scoring all items for users' histories, with the posterior mean or posterior samples."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from sigma_pyro.data.batching import pad_right
from sigma_pyro.nn.module import real_lengths


@torch.no_grad()
def last_position_representation(
    module, histories: list[np.ndarray], device, samples: int = 0
) -> torch.Tensor:
    """Decoder output at each history's last position: [B, D] from the posterior mean of
    z, or [S, B, D] from S draws of z ~ q(z | history)."""
    items = pad_right(histories, module.config.max_seq_length).to(device)
    lengths = real_lengths(items)
    last = lengths - 1
    loc, scale = module.encode(items)
    rows = torch.arange(items.shape[0], device=device)
    if samples <= 0:
        return module.decode(loc, lengths)[rows, last]
    z = loc + scale * torch.randn((samples, *loc.shape), device=device)
    decoded = module.decode(z.flatten(0, 1), lengths.repeat(samples)).view(samples, *loc.shape)
    return decoded[:, rows, last]


class PosteriorScorer:
    """Callable ``(start, stop) -> scores [B, stop-start]`` as the ranking code expects.

    With samples, the score is the log of the posterior predictive averaged over draws,
    log (1/S) sum_s softmax(logits_s); the softmax normaliser of each draw is computed over
    the whole catalog chunk by chunk, so memory stays bounded by the chunk size.
    """

    def __init__(self, module, representation: torch.Tensor, item_chunk_size: int):
        self.module = module
        self.representation = representation
        self.sampled = representation.dim() == 3
        if self.sampled:
            stops = range(1, module.num_items + 1, item_chunk_size)
            self.normaliser = torch.stack(
                [
                    module.item_logits(
                        representation, a, min(a + item_chunk_size, module.num_items + 1)
                    ).logsumexp(dim=-1)
                    for a in stops
                ]
            ).logsumexp(dim=0)  # [S, B]

    @torch.no_grad()
    def __call__(self, start: int, stop: int) -> torch.Tensor:
        logits = self.module.item_logits(self.representation, start, stop)
        if not self.sampled:
            return logits
        samples = logits.shape[0]
        return (logits - self.normaliser.unsqueeze(-1)).logsumexp(dim=0) - math.log(samples)


@torch.no_grad()
def top_k(
    scorer, num_items: int, k: int, item_chunk_size: int, exclude: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best ``k`` items per user as (scores, internal ids), each [B, k], merging chunk by
    chunk; items in ``exclude`` [B, L] (0-padded) are never recommended."""
    best_scores, best_items = None, None
    for start in range(1, num_items + 1, item_chunk_size):
        stop = min(start + item_chunk_size, num_items + 1)
        scores = scorer(start, stop).clone()
        if exclude is not None:
            exclude = exclude.to(scores.device)
            inside = (exclude >= start) & (exclude < stop)
            rows = (
                torch.arange(exclude.shape[0], device=scores.device).unsqueeze(1).expand_as(exclude)
            )
            scores[rows[inside], exclude[inside] - start] = float("-inf")
        items = torch.arange(start, stop, device=scores.device).expand_as(scores)
        if best_scores is not None:
            scores = torch.cat([best_scores, scores], dim=1)
            items = torch.cat([best_items, items], dim=1)
        best_scores, order = scores.topk(min(k, scores.shape[1]), dim=1)
        best_items = items.gather(1, order)
    return best_scores, best_items


@torch.no_grad()
def ranked_chunks(
    module,
    histories: list[np.ndarray],
    k: int,
    device,
    batch_size: int,
    item_chunk_size: int,
    posterior_samples: int = 0,
    exclude_history: bool = True,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Top-``k`` (scores, internal ids), each [B, k], for successive chunks of
    ``batch_size`` histories, in order: memory is bounded by one chunk's scores however
    many users there are. With ``exclude_history`` a user's items are never recommended
    (their score is -inf when fewer than ``k`` others remain)."""
    with module.evaluating():
        for start in range(0, len(histories), batch_size):
            chunk = histories[start : start + batch_size]
            representation = last_position_representation(module, chunk, device, posterior_samples)
            scorer = PosteriorScorer(module, representation, item_chunk_size)
            # Masking uses the whole history, not only the model's window of it.
            exclude = pad_right(chunk, max(len(h) for h in chunk)) if exclude_history else None
            yield top_k(scorer, module.num_items, k, item_chunk_size, exclude)


@torch.no_grad()
def last_position_interests(module, histories: list[np.ndarray], device):
    """The user's interests after each history (the last position's), as ``Interests`` with
    [B, K(, D)] fields, and the [M, K] assignments of the histories' M items."""
    items = pad_right(histories, module.config.max_seq_length).to(device)
    mask = items != 0
    interests = module.interests_after(items, mask)
    return interests, interests.assignment[mask]


class InterestScorer:
    """The ranking code's item scorer for SIGMA's interest head alone: an item's score is its
    best cosine similarity to one of the user's interest means, over the temperature."""

    def __init__(self, module, interest_loc: torch.Tensor):
        self.module = module
        self.interest_loc = interest_loc  # [B, K, D]

    @classmethod
    def for_histories(cls, module, histories: list[np.ndarray], device):
        return cls(module, last_position_interests(module, histories, device)[0].loc)

    @torch.no_grad()
    def __call__(self, start: int, stop: int) -> torch.Tensor:
        return self.module.interest_logits(self.interest_loc, start, stop)
