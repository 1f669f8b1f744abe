"""Top-K metrics computed from the 0-based rank of each user's held-out item."""

from __future__ import annotations

from collections.abc import Sequence

import torch

DEFAULT_KS: tuple[int, ...] = (5, 10, 20, 40)


def metrics_from_ranks(ranks: torch.Tensor, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Recall@K, NDCG@K and MRR for one held-out target per user.

    ``ranks`` holds the 0-based rank of each user's target (0 = ranked first). With a single
    relevant item, Recall@K is the hit rate ``rank < K``, NDCG@K is ``1 / log2(rank + 2)`` for
    hits and 0 otherwise, and MRR is the mean of ``1 / (rank + 1)``.

    Returns a dict with ``recall@K`` and ``ndcg@K`` for each K in ``ks`` (in that order),
    then ``mrr`` and ``num_users``; every metric is a plain Python float.

    Raises:
        ValueError: if ``ranks`` is empty or negative, or a K is not a positive integer.
    """
    ranks = torch.as_tensor(ranks).reshape(-1)
    if ranks.numel() == 0:
        raise ValueError("metrics_from_ranks needs at least one rank, got an empty tensor")
    if ranks.is_floating_point() or ranks.is_complex():
        raise ValueError(f"ranks must be integers, got dtype {ranks.dtype}")
    if int(ranks.min()) < 0:
        raise ValueError(
            f"ranks are 0-based and cannot be negative, got minimum {int(ranks.min())}"
        )
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"every K must be a positive integer, got {k!r}")

    # float64 so that averaging millions of users does not lose digits in the reported metric.
    r = ranks.to(torch.float64)
    gain = 1.0 / torch.log2(r + 2.0)
    out: dict[str, float] = {}
    for k in ks:
        hit = r < k
        out[f"recall@{k}"] = hit.to(torch.float64).mean().item()
        out[f"ndcg@{k}"] = torch.where(hit, gain, torch.zeros_like(gain)).mean().item()
    out["mrr"] = (1.0 / (r + 1.0)).mean().item()
    out["num_users"] = ranks.numel()
    return out
