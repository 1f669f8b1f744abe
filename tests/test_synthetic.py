import numpy as np
import pytest

from sigma_pyro.data.synthetic import SyntheticConfig, generate_synthetic
from sigma_pyro.errors import ConfigError

SMALL = dict(num_users=300, num_items=200, num_categories=5, seed=11)


@pytest.fixture(scope="module")
def small():
    return generate_synthetic(SyntheticConfig(**SMALL))


def item_numbers(items):
    return [int(item[1:]) for item in items]


def test_seed_reproducibility():
    first = generate_synthetic(SyntheticConfig(**SMALL))
    again = generate_synthetic(SyntheticConfig(**SMALL))
    other = generate_synthetic(SyntheticConfig(**{**SMALL, "seed": 12}))
    assert first.interactions.sequences == again.interactions.sequences
    assert np.array_equal(first.item_category, again.item_category)
    assert np.array_equal(first.user_interest_weights, again.user_interest_weights)
    assert first.interactions.sequences != other.interactions.sequences


def test_shape_of_generated_data(small):
    config = small.config
    sequences = small.interactions.sequences
    assert list(sequences) == [f"u{u}" for u in range(config.num_users)]
    for seq in sequences.values():
        assert config.min_length <= len(seq) <= config.max_length
        assert len(set(seq)) == len(seq)
        assert all(
            0 <= n < config.num_items and item == f"i{n}"
            for item, n in zip(seq, item_numbers(seq), strict=True)
        )
    sizes = np.bincount(small.item_category, minlength=config.num_categories)
    assert sizes.max() - sizes.min() <= 1
    weights = small.user_interest_weights
    assert np.allclose(weights.sum(axis=1), 1.0)
    interests = (weights > 0).sum(axis=1)
    assert interests.min() >= config.min_interests and interests.max() <= config.max_interests


def test_users_stay_inside_their_interests(small):
    # Categories (40 items) are longer than any sequence, so no fallback can leave them.
    inside = [
        small.user_interest_weights[u, small.item_category[item_numbers(seq)]] > 0
        for u, seq in enumerate(small.interactions.sequences.values())
    ]
    assert np.concatenate(inside).all()


def test_next_item_distribution_is_a_distribution(small):
    for user, seq in list(enumerate(small.interactions.sequences.values()))[:20]:
        for cut in (0, 1, len(seq) - 1):
            p = small.next_item_distribution(user, seq[:cut])
            assert p.shape == (small.config.num_items,)
            assert np.all(p >= 0)
            assert p.sum() == pytest.approx(1.0)
            assert np.all(p[item_numbers(seq[:cut])] == 0)
    # Before any item only the user's interest categories are possible.
    p = small.next_item_distribution(0, [])
    allowed = small.user_interest_weights[0, small.item_category] > 0
    assert p[~allowed].sum() == 0
    assert small.next_item_distribution(0, [3, "i4"])[[3, 4]].sum() == 0


def test_generated_items_are_likely_under_the_true_law(small):
    uniform, true = [], []
    for user, seq in enumerate(small.interactions.sequences.values()):
        for t in range(1, len(seq)):
            p = small.next_item_distribution(user, seq[:t])
            true.append(np.log(p[int(seq[t][1:])]))
            uniform.append(-np.log(small.config.num_items - t))
    # Every generated step must have had positive probability, and far more than uniform.
    assert np.isfinite(true).all()
    assert np.mean(true) > np.mean(uniform) + 1.0


def assert_chi_square_fit(counts, p, what):
    expected = counts.sum() * p
    # Rare cells are pooled so that every cell has enough expected counts for the chi-square law.
    common = expected >= 5
    observed = np.append(counts[common], counts[~common].sum())
    expected = np.append(expected[common], expected[~common].sum())
    observed, expected = observed[expected > 0], expected[expected > 0]
    dof = max(len(expected) - 1, 1)
    chi2 = ((observed - expected) ** 2 / expected).sum()
    assert chi2 < dof + 6 * np.sqrt(2 * dof), (
        f"{what}: chi2 {chi2:.1f} with {dof} degrees of freedom"
    )


def empirical_matches(data, user, prefix, draws=20000, seed=0):
    """The generator's own draws fit the exact law, item by item and category by category."""
    rng = np.random.default_rng(seed)
    p = data.next_item_distribution(user, prefix)
    counts = np.bincount(
        [data.sample_next_item(user, prefix, rng) for _ in range(draws)], minlength=len(p)
    )
    assert counts[p == 0].sum() == 0
    assert_chi_square_fit(counts, p, "items")
    # Spread over many items, a wrong stay/switch mix is too faint; per category it stands out.
    categories = len(data.user_interest_weights[user])
    assert_chi_square_fit(
        np.bincount(data.item_category, weights=counts, minlength=categories),
        np.bincount(data.item_category, weights=p, minlength=categories),
        "categories",
    )


def test_sampling_matches_next_item_distribution(small):
    # User 2 has several interests, so both staying and switching categories are exercised.
    assert (small.user_interest_weights[2] > 0).sum() >= 3
    seq = small.interactions.sequences["u2"]
    empirical_matches(small, 2, seq[:4])
    empirical_matches(small, 2, [])


def test_sampling_matches_in_the_fallback_branches():
    # Sequences as long as the catalogue force every exhaustion fallback to be used.
    config = SyntheticConfig(
        num_users=30,
        num_items=15,
        num_categories=3,
        max_interests=1,
        min_length=15,
        max_length=15,
        successors_per_item=2,
        transition_strength=1.0,
        seed=5,
    )
    data = generate_synthetic(config)
    for seq in data.interactions.sequences.values():
        assert sorted(item_numbers(seq)) == list(range(15))
    interest = np.flatnonzero(data.user_interest_weights[0])[0]
    own = [int(i) for i in np.flatnonzero(data.item_category == interest)]
    other = [int(i) for i in np.flatnonzero(data.item_category != interest)]

    # With transition_strength=1 and a single interest, the support after one item is exactly
    # that item's successors.
    successors = list(np.flatnonzero(data.next_item_distribution(0, [own[0]])))
    assert len(successors) == 2
    # Once they are seen, popularity over the other unseen items of the category takes over.
    prefix = successors + [own[0]]
    assert set(np.flatnonzero(data.next_item_distribution(0, prefix))) == set(own) - set(prefix)
    empirical_matches(data, 0, prefix, draws=5000)
    # Interest exhausted and the last item elsewhere: only staying in that category remains.
    empirical_matches(data, 0, own + other[:1], draws=5000)
    # Interest exhausted and the last item in it: global popularity over unseen items.
    p = data.next_item_distribution(0, own)
    assert set(np.flatnonzero(p)) == set(other)
    empirical_matches(data, 0, own, draws=5000)


def test_bayes_optimal_metrics(small):
    metrics = small.bayes_optimal_metrics()
    assert set(metrics) == {f"{m}@{k}" for m in ("recall", "ndcg") for k in (5, 10, 20, 40)}
    assert metrics["recall@10"] > 5 * 10 / small.config.num_items
    recalls = [metrics[f"recall@{k}"] for k in (5, 10, 20, 40)]
    assert recalls == sorted(recalls) and recalls[-1] <= 1 + 1e-9
    assert all(metrics[f"ndcg@{k}"] <= metrics[f"recall@{k}"] for k in (5, 10, 20, 40))
    valid = small.bayes_optimal_metrics(ks=(10,), split="valid")
    assert set(valid) == {"recall@10", "ndcg@10"}
    with pytest.raises(ValueError):
        small.bayes_optimal_metrics(split="train")


def test_bayes_optimal_metrics_match_their_definition(small):
    recall, ndcg = [], []
    for user, seq in enumerate(small.interactions.sequences.values()):
        top = np.sort(small.next_item_distribution(user, seq[:-2]))[::-1][:5]
        recall.append(top.sum())
        ndcg.append(sum(top[r] / np.log2(r + 2) for r in range(5)))
    metrics = small.bayes_optimal_metrics(ks=(5,), split="valid")
    assert metrics["recall@5"] == pytest.approx(np.mean(recall))
    assert metrics["ndcg@5"] == pytest.approx(np.mean(ndcg))


def test_default_generation_size():
    data = generate_synthetic()
    assert data.interactions.num_users == 2000


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_users", 0),
        ("num_items", 4),
        ("max_interests", 9),
        ("min_interests", 0),
        ("dirichlet_alpha", 0.0),
        ("min_length", 2),
        ("max_length", 1001),
        ("stay_probability", 1.5),
        ("transition_strength", -0.1),
        ("successors_per_item", 125),
        ("zipf_exponent", float("nan")),
        ("num_users", 2.5),
        ("seed", -1),
    ],
)
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        SyntheticConfig(**{field: value})
