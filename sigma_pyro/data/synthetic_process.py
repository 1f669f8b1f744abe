"""The generating process behind :mod:`sigma_pyro.data.synthetic`, whose docstring gives its
steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sigma_pyro.data.synthetic import SyntheticConfig


class Process:
    """The sampled parameters of the process and the two operations on them: draw and evaluate.

    Items are handled internally in category-major order so that a category is a contiguous
    slice; ``raw_of_internal`` maps back to the public ids, which are shuffled so that neither
    category nor popularity can be read off an item's id.
    """

    def __init__(self, config: SyntheticConfig, rng: np.random.Generator) -> None:
        self.config = config
        m, c = config.num_items, config.num_categories
        self.sizes = np.full(c, m // c) + (np.arange(c) < m % c)
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)])
        self.category = np.repeat(np.arange(c), self.sizes)
        self.raw_of_internal = rng.permutation(m)
        self.internal_of_raw = np.argsort(self.raw_of_internal)

        self.popularity = np.empty(m)
        s = config.successors_per_item
        self.successor_local = np.empty((m, s), dtype=np.int64)
        self.successor_weight = rng.dirichlet(np.ones(s), size=m)
        for cat in range(c):
            start, size = self.starts[cat], self.sizes[cat]
            ranks = rng.permutation(size) + 1.0
            weights = ranks**-config.zipf_exponent
            self.popularity[start : start + size] = weights / weights.sum()
            for local in range(size):
                # Draw among the other items of the category, then skip over the item itself.
                others = rng.choice(size - 1, size=s, replace=False)
                self.successor_local[start + local] = others + (others >= local)
        # Every category gets equal mass, so the fallback does not favour small categories.
        self.global_popularity = self.popularity / c

    def new_state(self, weights: np.ndarray) -> State:
        return State(weights, np.ones(self.config.num_items), self.sizes.copy())

    def observe(self, state: State, item: int) -> None:
        state.unseen[item] = 0.0
        state.remaining[self.category[item]] -= 1
        state.previous = item

    def category_weights(self, state: State) -> np.ndarray:
        """Unnormalised probability of each category for the next step (exhausted ones zeroed)."""
        if state.previous < 0:
            weights = state.weights.copy()
        else:
            weights = (1.0 - self.config.stay_probability) * state.weights
            weights[self.category[state.previous]] += self.config.stay_probability
        return weights * (state.remaining > 0)

    def within(self, cat: int, state: State) -> np.ndarray:
        """Normalised distribution over the items of ``cat`` (a slice), given the category."""
        start, stop = self.starts[cat], self.starts[cat + 1]
        unseen = state.unseen[start:stop]
        popularity = self.popularity[start:stop]
        strength = self.config.transition_strength
        previous = state.previous
        if previous >= 0 and self.category[previous] == cat and strength > 0:
            mix = (1.0 - strength) * popularity
            mix[self.successor_local[previous]] += strength * self.successor_weight[previous]
            mix *= unseen
            total = mix.sum()
            if total > 0:
                return mix / total
        weights = popularity * unseen
        return weights / weights.sum()

    def draw(self, state: State, rng: np.random.Generator) -> int:
        categories = self.category_weights(state)
        if categories.sum() > 0:
            cat = _draw(rng, categories)
            return int(self.starts[cat]) + _draw(rng, self.within(cat, state))
        return _draw(rng, self.global_popularity * state.unseen)

    def distribution(self, state: State) -> np.ndarray:
        """Exact next-item probabilities in internal order; mirrors :meth:`draw` step by step."""
        categories = self.category_weights(state)
        total = categories.sum()
        if total > 0:
            probabilities = np.zeros(self.config.num_items)
            for cat in np.flatnonzero(categories):
                start, stop = self.starts[cat], self.starts[cat + 1]
                probabilities[start:stop] = categories[cat] / total * self.within(cat, state)
            return probabilities
        weights = self.global_popularity * state.unseen
        if weights.sum() == 0:
            raise ValueError("every item has already been seen; there is no next item")
        return weights / weights.sum()


@dataclass
class State:
    """What the next step depends on: interest weights, unseen items, and the previous item."""

    weights: np.ndarray
    unseen: np.ndarray
    remaining: np.ndarray
    previous: int = -1


def _draw(rng: np.random.Generator, weights: np.ndarray) -> int:
    """Index drawn proportionally to non-negative ``weights``; zero weights are never drawn."""
    cumulative = np.cumsum(weights)
    index = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    if index == len(weights):  # the product rounded up to the total
        index = int(np.flatnonzero(weights)[-1])
    return index
