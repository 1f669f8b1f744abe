"""Full-ranking evaluation: chunked ranks against a brute-force reference, and the metrics."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sigma_pyro.evaluation.metrics import DEFAULT_KS, metrics_from_ranks
from sigma_pyro.evaluation.ranking import PopularityRecommender, evaluate_ranking, target_ranks


def brute_force_rank(scores: list[float], target: int, history: list[int], mask: bool) -> int:
    """Rank by the definition, one item at a time; ``scores[0]`` belongs to padding."""
    num_items = len(scores) - 1
    t = scores[target]
    if math.isnan(t) or t == -math.inf or (mask and target in history):
        return num_items - 1
    rank = 0
    for j in range(1, num_items + 1):
        if j == target or (mask and j in history):
            continue
        if scores[j] > t or scores[j] == t:
            rank += 1
    return rank


def random_case(seed: int, batch: int, num_items: int, hist_len: int, integer: bool):
    g = torch.Generator().manual_seed(seed)
    if integer:
        # Few distinct values, so most targets tie with many items.
        scores = torch.randint(0, 4, (batch, num_items + 1), generator=g).float()
    else:
        scores = torch.randn(batch, num_items + 1, generator=g)
    targets = torch.randint(1, num_items + 1, (batch,), generator=g)
    histories = torch.randint(0, num_items + 1, (batch, hist_len), generator=g)
    # Plant the target in some histories: the masked-target path must be exercised.
    plant = torch.rand(batch, generator=g) < 0.3
    if hist_len:
        histories[:, 0] = torch.where(plant, targets, histories[:, 0])
    return scores, targets, histories


def reference_ranks(scores, targets, histories, mask):
    return [
        brute_force_rank(scores[b].tolist(), int(targets[b]), histories[b].tolist(), mask)
        for b in range(len(targets))
    ]


def chunked_scorer(scores: torch.Tensor, calls: list | None = None):
    def score_items(start: int, stop: int) -> torch.Tensor:
        if calls is not None:
            calls.append((start, stop))
        return scores[:, start:stop]

    return score_items


@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("mask_history", [True, False])
@pytest.mark.parametrize("chunk", [1, 3, 7, 23, 24, 100])
def test_matches_brute_force(integer, mask_history, chunk):
    num_items = 23
    scores, targets, histories = random_case(chunk, 9, num_items, 6, integer)
    got = target_ranks(
        chunked_scorer(scores),
        targets,
        histories,
        num_items,
        item_chunk_size=chunk,
        mask_history=mask_history,
    )
    assert got.dtype == torch.long
    assert got.tolist() == reference_ranks(scores, targets, histories, mask_history)


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    batch=st.integers(1, 6),
    num_items=st.integers(1, 30),
    hist_len=st.integers(0, 8),
    integer=st.booleans(),
    mask_history=st.booleans(),
    chunk=st.integers(1, 40),
)
def test_matches_brute_force_hypothesis(
    seed, batch, num_items, hist_len, integer, mask_history, chunk
):
    scores, targets, histories = random_case(seed, batch, num_items, hist_len, integer)
    calls: list = []
    got = target_ranks(
        chunked_scorer(scores, calls),
        targets,
        histories,
        num_items,
        item_chunk_size=chunk,
        mask_history=mask_history,
    )
    assert got.tolist() == reference_ranks(scores, targets, histories, mask_history)
    # Padding is never scored and no call exceeds the chunk size (the memory bound).
    assert all(1 <= a < b <= num_items + 1 and b - a <= chunk for a, b in calls)


def test_all_equal_scores_rank_pessimistically():
    num_items = 10
    scores = torch.zeros(2, num_items + 1)
    targets = torch.tensor([4, 7])
    histories = torch.tensor([[0, 0, 0], [1, 2, 0]])
    ranks = target_ranks(chunked_scorer(scores), targets, histories, num_items, item_chunk_size=3)
    # Candidates exclude the history, so the target lands behind every other candidate.
    assert ranks.tolist() == [num_items - 1, num_items - 2 - 1]
    ranks = target_ranks(chunked_scorer(scores), targets, histories, num_items, mask_history=False)
    assert ranks.tolist() == [num_items - 1, num_items - 1]


def test_nan_or_minus_inf_target_ranks_last():
    scores = torch.arange(6.0).repeat(3, 1)
    scores[0, 2] = float("nan")
    scores[1, 3] = float("-inf")
    targets = torch.tensor([2, 3, 5])
    histories = torch.zeros(3, 1, dtype=torch.long)
    ranks = target_ranks(chunked_scorer(scores), targets, histories, 5, item_chunk_size=2)
    assert ranks.tolist() == [4, 4, 0]


def test_target_in_history_is_a_miss_only_when_masking():
    scores = torch.tensor([[0.0, 1.0, 5.0, 2.0]])
    targets = torch.tensor([2])
    histories = torch.tensor([[2, 0]])
    assert target_ranks(chunked_scorer(scores), targets, histories, 3).tolist() == [2]
    unmasked = target_ranks(chunked_scorer(scores), targets, histories, 3, mask_history=False)
    assert unmasked.tolist() == [0]


def test_empty_batch_and_bad_inputs():
    empty = target_ranks(
        chunked_scorer(torch.zeros(0, 4)),
        torch.zeros(0, dtype=torch.long),
        torch.zeros(0, 2, dtype=torch.long),
        3,
    )
    assert empty.shape == (0,)
    scores = torch.zeros(1, 4)
    hist = torch.zeros(1, 1, dtype=torch.long)
    with pytest.raises(ValueError, match="targets"):
        target_ranks(chunked_scorer(scores), torch.tensor([0]), hist, 3)
    with pytest.raises(ValueError, match="histories"):
        target_ranks(chunked_scorer(scores), torch.tensor([1]), torch.tensor([[4]]), 3)
    with pytest.raises(ValueError, match="must return shape"):
        target_ranks(lambda a, b: torch.zeros(2, b - a), torch.tensor([1]), hist, 3)


def test_metrics_hand_computed():
    m = metrics_from_ranks(torch.tensor([0, 1, 9, 50]), ks=(10,))
    assert list(m) == ["recall@10", "ndcg@10", "mrr", "num_users"]
    assert m["recall@10"] == pytest.approx(0.75)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(11)) / 4)
    assert m["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 10 + 1 / 51) / 4)
    assert m["num_users"] == 4
    assert all(type(v) is float for k, v in m.items() if k != "num_users")


def test_metrics_default_keys_and_errors():
    m = metrics_from_ranks(torch.tensor([3]))
    expected = [f"{name}@{k}" for k in DEFAULT_KS for name in ("recall", "ndcg")]
    assert list(m) == expected + ["mrr", "num_users"]
    assert m["recall@5"] == 1.0 and m["ndcg@5"] == pytest.approx(1 / math.log2(5))
    with pytest.raises(ValueError, match="empty"):
        metrics_from_ranks(torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="negative"):
        metrics_from_ranks(torch.tensor([-1]))


@pytest.mark.parametrize("mask_history", [True, False])
def test_evaluate_ranking_independent_of_user_chunking(mask_history):
    num_items, num_users = 37, 29
    scores, targets, histories = random_case(5, num_users, num_items, 5, integer=True)

    def for_users(users: slice):
        return chunked_scorer(scores[users])

    kwargs = dict(item_chunk_size=8, mask_history=mask_history)
    whole = evaluate_ranking(
        for_users, targets, histories, num_items, user_chunk_size=num_users, **kwargs
    )
    expected = metrics_from_ranks(
        torch.tensor(reference_ranks(scores, targets, histories, mask_history))
    )
    assert whole == pytest.approx(expected)
    for user_chunk_size in (1, 4, 10, 100):
        chunked = evaluate_ranking(
            for_users, targets, histories, num_items, user_chunk_size=user_chunk_size, **kwargs
        )
        assert chunked == pytest.approx(whole)


def test_evaluate_ranking_runs_without_grad():
    weights = torch.randn(4, 6, requires_grad=True)
    seen = []

    def for_users(users: slice):
        def score_items(a, b):
            out = weights[users, a:b] * 2
            seen.append(out.requires_grad)
            return out

        return score_items

    evaluate_ranking(
        for_users,
        torch.tensor([1, 2, 3, 4]),
        torch.zeros(4, 1, dtype=torch.long),
        5,
        user_chunk_size=3,
    )
    assert seen and not any(seen)


def test_popularity_ranks_most_popular_unseen_item_first():
    num_items = 6
    train = [[1, 2, 2, 3], torch.tensor([2, 3, 3, 0]), [2, 5]]
    model = PopularityRecommender().fit(train, num_items)
    assert model.counts.tolist() == [0, 1, 4, 3, 0, 1, 0]
    # Item 2 is the most popular: first for users who have not seen it; user 1 has seen
    # items 2 and 3, so its best remaining candidates are items 1 and 5, tied.
    targets = torch.tensor([3, 1, 2])
    histories = torch.tensor([[1, 2, 0, 0], [2, 3, 3, 0], [5, 0, 0, 0]])
    scorer = model.score_items_for_users(slice(0, 3))
    assert scorer(1, 7).shape == (3, 6)
    ranks = target_ranks(scorer, targets, histories, num_items, item_chunk_size=4)
    assert ranks.tolist() == [0, 1, 0]
    metrics = evaluate_ranking(
        model.score_items_for_users, targets, histories, num_items, user_chunk_size=2, ks=(1,)
    )
    assert metrics["recall@1"] == pytest.approx(2 / 3)


def test_popularity_rejects_bad_ids_and_unfitted_use():
    with pytest.raises(ValueError, match="0..3"):
        PopularityRecommender().fit([[4]], 3)
    with pytest.raises(RuntimeError, match="fit"):
        PopularityRecommender().score_items_for_users(slice(0, 1))
