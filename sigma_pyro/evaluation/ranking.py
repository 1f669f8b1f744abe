"""Full-ranking leave-one-out evaluation for next-item recommendation.

Every item is a candidate (no negative sampling), so the rank of the held-out item is exact.
Internal item ids run 1..num_items; id 0 is padding and is never a candidate. Scores are
requested chunk by chunk, so memory stays bounded by ``users x item_chunk_size`` however large
the catalogue is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from sigma_pyro.evaluation.metrics import DEFAULT_KS, metrics_from_ranks
from sigma_pyro.runtime.distributed import SINGLE_PROCESS, World, all_gather

ItemScorer = Callable[[int, int], torch.Tensor]


def _validate_inputs(
    targets: torch.Tensor, histories: torch.Tensor, num_items: int, item_chunk_size: int
) -> None:
    if num_items < 1:
        raise ValueError(f"num_items must be at least 1, got {num_items}")
    if item_chunk_size < 1:
        raise ValueError(f"item_chunk_size must be at least 1, got {item_chunk_size}")
    if targets.dim() != 1:
        raise ValueError(f"targets must have shape [B], got {tuple(targets.shape)}")
    if histories.dim() != 2 or histories.shape[0] != targets.shape[0]:
        raise ValueError(
            f"histories must have shape [B, L] with B = {targets.shape[0]}, "
            f"got {tuple(histories.shape)}"
        )
    if targets.numel() and (int(targets.min()) < 1 or int(targets.max()) > num_items):
        raise ValueError(
            f"targets must be internal item ids in 1..{num_items}, "
            f"got range {int(targets.min())}..{int(targets.max())}"
        )
    if histories.numel() and (int(histories.min()) < 0 or int(histories.max()) > num_items):
        raise ValueError(
            f"histories must hold item ids in 0..{num_items} (0 = padding), "
            f"got range {int(histories.min())}..{int(histories.max())}"
        )


def _item_chunks(num_items: int, item_chunk_size: int) -> range:
    return range(1, num_items + 1, item_chunk_size)


def _score_chunk(score_items: ItemScorer, start: int, stop: int, batch: int) -> torch.Tensor:
    scores = score_items(start, stop)
    if scores.shape != (batch, stop - start):
        raise ValueError(
            f"score_items({start}, {stop}) must return shape {(batch, stop - start)}, "
            f"got {tuple(scores.shape)}"
        )
    return scores


def _target_scores(
    score_items: ItemScorer, targets: torch.Tensor, num_items: int, item_chunk_size: int
) -> torch.Tensor:
    """Each user's score for its own target, without materialising ``[B, num_items]``.

    Uses the same chunk grid as the counting pass, so the target is scored by exactly the same
    call it is later compared in (a model whose numerics depend on the chunk shape still ties
    with itself), and skips chunks that hold no target.
    """
    batch = targets.shape[0]
    chunk_of_target = (targets - 1) // item_chunk_size
    result: torch.Tensor | None = None
    for chunk in torch.unique(chunk_of_target).tolist():
        start = 1 + chunk * item_chunk_size
        stop = min(start + item_chunk_size, num_items + 1)
        scores = _score_chunk(score_items, start, stop, batch)
        device = scores.device
        # Users whose target lies in another chunk get a clamped, valid index whose value the
        # where below throws away.
        column = (targets - start).clamp(0, stop - start - 1).to(device)
        picked = scores.gather(1, column.unsqueeze(1)).squeeze(1)
        if result is None:
            result = torch.empty(batch, dtype=scores.dtype, device=device)
        result = torch.where((chunk_of_target == chunk).to(device), picked, result)
    assert result is not None, "called with an empty batch"
    return result


def _history_mask(histories: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Boolean ``[B, stop - start]``: which items of the chunk each user has already seen."""
    width = stop - start
    inside = (histories >= start) & (histories < stop)
    # Ids outside the chunk (padding included) are routed to a spare last column that is cut
    # off afterwards; every write stores True, so duplicate indices cannot race.
    index = torch.where(inside, histories - start, torch.full_like(histories, width))
    mask = torch.zeros(histories.shape[0], width + 1, dtype=torch.bool, device=histories.device)
    mask.scatter_(1, index, True)
    return mask[:, :width]


def target_ranks(
    score_items: ItemScorer,
    targets: torch.Tensor,
    histories: torch.Tensor,
    num_items: int,
    *,
    item_chunk_size: int = 8192,
    mask_history: bool = True,
) -> torch.Tensor:
    """0-based rank of each user's target among all items 1..num_items.

    Args:
        score_items: ``score_items(start, stop)`` returns the ``[B, stop - start]`` scores of
            the B users for internal item ids ``start..stop-1``; it is only ever called with
            ``1 <= start < stop <= num_items + 1`` and ``stop - start <= item_chunk_size``.
        targets: LongTensor ``[B]`` of held-out internal ids in ``1..num_items``.
        histories: LongTensor ``[B, L]`` of internal ids already seen, 0-padded anywhere.
        num_items: number of real items N.
        item_chunk_size: items scored per call; peak memory is ``O(B * item_chunk_size)``.
        mask_history: exclude each user's history items from the candidates. A target that is
            itself in the history is then not a candidate either and counts as a miss.

    The rank is the number of candidates scoring strictly above the target plus the number of
    other candidates tying with it: ties are broken pessimistically, so a constant model gets
    no credit. A target scored NaN or ``-inf`` (or masked) ranks last, ``num_items - 1``.
    Candidates scored NaN never outrank anything. Padding id 0 is never a candidate.

    Returns:
        LongTensor ``[B]`` on the device of the scores.
    """
    _validate_inputs(targets, histories, num_items, item_chunk_size)
    batch = targets.shape[0]
    if batch == 0:
        return torch.zeros(0, dtype=torch.long, device=targets.device)

    chunks = _item_chunks(num_items, item_chunk_size)
    if len(chunks) == 1:
        # One chunk holds the whole catalog: score it once and read the targets off it.
        whole = _score_chunk(score_items, 1, num_items + 1, batch)
        target_score = whole.gather(1, (targets - 1).to(whole.device).unsqueeze(1)).squeeze(1)
    else:
        whole = None
        target_score = _target_scores(score_items, targets, num_items, item_chunk_size)
    device = target_score.device
    targets = targets.to(device)
    histories = histories.to(device)
    threshold = target_score.unsqueeze(1)

    ranks = torch.zeros(batch, dtype=torch.long, device=device)
    for start in chunks:
        stop = min(start + item_chunk_size, num_items + 1)
        scores = (whole if whole is not None else _score_chunk(score_items, start, stop, batch)).to(
            device
        )
        is_target = torch.arange(start, stop, device=device).unsqueeze(0) == targets.unsqueeze(1)
        beats = (scores > threshold) | ((scores == threshold) & ~is_target)
        if mask_history:
            # Leaving masked items out of the count is what setting them to -inf would do,
            # except when the target is -inf too, and that case ranks last anyway.
            beats &= ~_history_mask(histories, start, stop)
        ranks += beats.sum(dim=1)

    last = torch.isnan(target_score) | (target_score == float("-inf"))
    if mask_history:
        last |= (histories == targets.unsqueeze(1)).any(dim=1)
    return torch.where(last, torch.full_like(ranks, num_items - 1), ranks)


def evaluate_ranking(
    score_items_for_users: Callable[[slice], ItemScorer],
    targets: torch.Tensor,
    histories: torch.Tensor,
    num_items: int,
    *,
    user_chunk_size: int = 1024,
    item_chunk_size: int = 8192,
    mask_history: bool = True,
    ks: Sequence[int] = DEFAULT_KS,
    world: World = SINGLE_PROCESS,
) -> dict:
    """Full-ranking metrics over all users, processed ``user_chunk_size`` users at a time.

    ``score_items_for_users(user_slice)`` returns the item scorer (see :func:`target_ranks`)
    for the users ``targets[user_slice]``; ``user_slice`` always has a concrete start and stop.
    Runs under ``torch.no_grad()`` and returns :func:`metrics_from_ranks` of all ranks.

    With several ranks in ``world``, rank r scores the user chunks r, r + size, ...: the
    very chunks one process would score, so each user's rank, and hence every metric, is
    exactly the one-process value (a scorer that samples draws other noise, of course).

    Raises:
        ValueError: on an empty user set, bad chunk sizes or malformed inputs.
    """
    if user_chunk_size < 1:
        raise ValueError(f"user_chunk_size must be at least 1, got {user_chunk_size}")
    num_users = targets.shape[0] if targets.dim() == 1 else -1
    if num_users < 0 or histories.dim() != 2 or histories.shape[0] != num_users:
        raise ValueError(
            f"targets must be [U] and histories [U, L], got {tuple(targets.shape)} "
            f"and {tuple(histories.shape)}"
        )
    starts = list(range(0, num_users, user_chunk_size))
    mine = {}
    with torch.no_grad():
        for start in starts[world.rank :: world.size]:
            users = slice(start, min(start + user_chunk_size, num_users))
            chunk_ranks = target_ranks(
                score_items_for_users(users),
                targets[users],
                histories[users],
                num_items,
                item_chunk_size=item_chunk_size,
                mask_history=mask_history,
            )
            mine[start] = chunk_ranks.cpu()
    by_start = {start: r for shard in all_gather(mine, world) for start, r in shard.items()}
    ranks = [by_start[start] for start in starts]
    if not ranks:
        raise ValueError("evaluate_ranking needs at least one user")
    return metrics_from_ranks(torch.cat(ranks), ks)


class PopularityRecommender:
    """Scores every item by how often it occurs in the training sequences, for every user.

    The non-personalised baseline a sequential model has to beat.
    """

    def __init__(self) -> None:
        self.counts: torch.Tensor | None = None
        self.num_users = 0

    def fit(
        self, train_sequences: Sequence[torch.Tensor] | Sequence[Sequence[int]], num_items: int
    ) -> PopularityRecommender:
        """Count item occurrences in ``train_sequences`` (internal ids, 0 = padding, ignored).

        The i-th sequence belongs to user i; that numbering is what the user slices passed to
        :meth:`score_items_for_users` refer to. Returns ``self``.
        """
        if num_items < 1:
            raise ValueError(f"num_items must be at least 1, got {num_items}")
        counts = torch.zeros(num_items + 1, dtype=torch.long)
        for seq in train_sequences:
            ids = torch.as_tensor(seq, dtype=torch.long).reshape(-1)
            if ids.numel() == 0:
                continue
            if int(ids.min()) < 0 or int(ids.max()) > num_items:
                raise ValueError(
                    f"training item ids must lie in 0..{num_items}, "
                    f"got range {int(ids.min())}..{int(ids.max())}"
                )
            counts += torch.bincount(ids, minlength=num_items + 1)
        counts[0] = 0
        self.counts = counts.to(torch.get_default_dtype())
        self.num_users = len(train_sequences)
        return self

    def score_items_for_users(self, user_slice: slice) -> ItemScorer:
        """Scorer giving each user in ``user_slice`` the popularity count of every item."""
        if self.counts is None:
            raise RuntimeError("PopularityRecommender.fit must be called before scoring")
        counts = self.counts
        batch = len(range(self.num_users)[user_slice])

        def score_items(start: int, stop: int) -> torch.Tensor:
            return counts[start:stop].unsqueeze(0).expand(batch, stop - start)

        return score_items
