"""Synthetic sequences with planted multi-interest structure and a known next-item law.

Because the generating process is explicit, :meth:`SyntheticData.next_item_distribution` gives
the exact probability of every next item, and :meth:`SyntheticData.bayes_optimal_metrics` the
best Recall/NDCG any recommender could reach in expectation. That turns "the model learned
something" into a measurable gap.

The process, per user:

1. The user has ``k`` interests (distinct categories, ``k`` uniform in
   ``[min_interests, max_interests]``) with Dirichlet(``dirichlet_alpha``) weights ``w``.
2. The first item's category is drawn from ``w``. Afterwards the category is kept with
   probability ``stay_probability``, otherwise redrawn from ``w`` (possibly the same one); the
   "current" category is that of the previous item.
3. Inside the chosen category the item follows
   ``transition_strength * successors(prev) + (1 - transition_strength) * popularity`` when the
   previous item is in that category, and ``popularity`` otherwise.
4. Items are never repeated: seen items get probability zero and the category's distribution is
   renormalised (falling back to plain popularity if the successor mixture has no unseen mass).
   Categories with no unseen item are dropped from the category draw; if no category is left,
   the item is drawn from global popularity over unseen items.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from numbers import Integral, Real

import numpy as np

from sigma_pyro.data.interactions import Interactions
from sigma_pyro.data.readers import MIN_ITEMS_PER_USER
from sigma_pyro.data.synthetic_process import Process, State
from sigma_pyro.errors import ConfigError


@dataclass
class SyntheticConfig:
    """Settings of the synthetic generator; impossible combinations raise :class:`ConfigError`."""

    num_users: int = 2000
    num_items: int = 1000
    num_categories: int = 8
    min_interests: int = 1
    max_interests: int = 4
    dirichlet_alpha: float = 1.0
    min_length: int = 5
    max_length: int = 30
    zipf_exponent: float = 1.1
    stay_probability: float = 0.8
    transition_strength: float = 0.7
    successors_per_item: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(f.default, int):
                if isinstance(value, bool) or not isinstance(value, Integral):
                    raise ConfigError(
                        f"SyntheticConfig.{f.name}: expected an integer, got {value!r}"
                    )
            elif isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
                raise ConfigError(
                    f"SyntheticConfig.{f.name}: expected a finite number, got {value!r}"
                )

        def require(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ConfigError(
                    f"SyntheticConfig.{name}: must be {rule}, got {getattr(self, name)!r}"
                )

        require(self.num_users >= 1, "num_users", ">= 1")
        require(self.num_categories >= 1, "num_categories", ">= 1")
        require(
            self.num_items >= self.num_categories,
            "num_items",
            f">= num_categories ({self.num_categories})",
        )
        require(self.min_interests >= 1, "min_interests", ">= 1")
        require(
            self.min_interests <= self.max_interests <= self.num_categories,
            "max_interests",
            f"between min_interests ({self.min_interests}) "
            f"and num_categories ({self.num_categories})",
        )
        require(self.dirichlet_alpha > 0, "dirichlet_alpha", "> 0")
        require(
            self.min_length >= MIN_ITEMS_PER_USER,
            "min_length",
            f">= {MIN_ITEMS_PER_USER} (leave-one-out needs {MIN_ITEMS_PER_USER})",
        )
        require(
            self.min_length <= self.max_length <= self.num_items,
            "max_length",
            f"between min_length ({self.min_length}) and num_items ({self.num_items}), "
            "since items never repeat",
        )
        require(self.zipf_exponent >= 0, "zipf_exponent", ">= 0")
        require(0 <= self.stay_probability <= 1, "stay_probability", "in [0, 1]")
        require(0 <= self.transition_strength <= 1, "transition_strength", "in [0, 1]")
        smallest_category = self.num_items // self.num_categories
        require(
            1 <= self.successors_per_item <= smallest_category - 1,
            "successors_per_item",
            f"between 1 and {smallest_category - 1} "
            f"(the smallest category has {smallest_category} items)",
        )
        require(self.seed >= 0, "seed", ">= 0")


@dataclass
class SyntheticData:
    """Generated interactions together with the ground truth that produced them."""

    interactions: Interactions
    item_category: np.ndarray
    user_interest_weights: np.ndarray
    config: SyntheticConfig
    _process: Process = field(repr=False)

    def next_item_distribution(self, user_index: int, prefix: Sequence[str | int]) -> np.ndarray:
        """True probability of each item (indexed by the number in its raw id) after ``prefix``."""
        state = self._state_after(user_index, prefix)
        return self._process.distribution(state)[self._process.internal_of_raw]

    def sample_next_item(
        self, user_index: int, prefix: Sequence[str | int], rng: np.random.Generator
    ) -> int:
        """Draw the next item after ``prefix`` with the generator's own sampling code."""
        state = self._state_after(user_index, prefix)
        return int(self._process.raw_of_internal[self._process.draw(state, rng)])

    def bayes_optimal_metrics(
        self, ks: Sequence[int] = (5, 10, 20, 40), split: str = "test"
    ) -> dict[str, float]:
        """Expected Recall@K and NDCG@K of an oracle ranking unseen items by the true law.

        With leave-one-out the held-out item is the last one (``test``) or the one before
        (``valid``); the oracle sees everything before it.
        """
        if split not in ("test", "valid"):
            raise ValueError(f"split must be 'test' or 'valid', got {split!r}")
        if not ks or any(isinstance(k, bool) or not isinstance(k, Integral) or k < 1 for k in ks):
            raise ValueError(f"ks must be positive integers, got {ks!r}")
        held_out = 1 if split == "test" else 2
        users = list(self.interactions.sequences.values())
        probabilities = np.stack(
            [
                self._process.distribution(self._state_after(u, seq[:-held_out]))
                for u, seq in enumerate(users)
            ]
        )
        depth = min(max(ks), self.config.num_items)
        # Only the sorted probabilities matter: ties can be broken either way without changing
        # the expected metric.
        top = -np.sort(-probabilities, axis=1)[:, :depth]
        discounted = top / np.log2(np.arange(depth) + 2.0)
        metrics = {}
        for k in ks:
            metrics[f"recall@{k}"] = float(top[:, :k].sum(axis=1).mean())
            metrics[f"ndcg@{k}"] = float(discounted[:, :k].sum(axis=1).mean())
        return metrics

    def _state_after(self, user_index: int, prefix: Sequence[str | int]) -> State:
        if not 0 <= user_index < self.config.num_users:
            raise ValueError(f"user_index {user_index} out of range [0, {self.config.num_users})")
        state = self._process.new_state(self.user_interest_weights[user_index])
        for item in prefix:
            self._process.observe(state, int(self._process.internal_of_raw[self._raw_index(item)]))
        return state

    def _raw_index(self, item: str | int) -> int:
        if isinstance(item, str):
            if not (item.startswith("i") and item[1:].isdigit()):
                raise ValueError(f"unknown item id {item!r}; synthetic ids look like 'i12'")
            index = int(item[1:])
        else:
            index = int(item)
        if not 0 <= index < self.config.num_items:
            raise ValueError(f"item {item!r} out of range [0, {self.config.num_items})")
        return index


def generate_synthetic(config: SyntheticConfig | None = None) -> SyntheticData:
    """Generate users ``u0..`` with item sequences over ``i0..``, reproducibly from
    ``config.seed``."""
    config = config or SyntheticConfig()
    rng = np.random.default_rng(config.seed)
    process = Process(config, rng)
    item_names = [f"i{raw}" for raw in process.raw_of_internal]

    interest_weights = np.zeros((config.num_users, config.num_categories))
    sequences: dict[str, list[str]] = {}
    for user in range(config.num_users):
        count = rng.integers(config.min_interests, config.max_interests + 1)
        interests = rng.choice(config.num_categories, size=count, replace=False)
        interest_weights[user, interests] = rng.dirichlet(np.full(count, config.dirichlet_alpha))
        length = rng.integers(config.min_length, config.max_length + 1)
        state = process.new_state(interest_weights[user])
        items = []
        for _ in range(length):
            item = process.draw(state, rng)
            process.observe(state, item)
            items.append(item_names[item])
        sequences[f"u{user}"] = items

    item_category = process.category[process.internal_of_raw]
    interactions = Interactions(
        sequences=sequences,
        source=f"synthetic(seed={config.seed})",
        notes=[
            f"synthetic: {config.num_users} users, {config.num_items} items, "
            f"{config.num_categories} categories, seed {config.seed}"
        ],
    )
    return SyntheticData(interactions, item_category, interest_weights, config, process)
