"""SIGMA's multi-interest part learns on planted data: its head predicts far better than
chance, its assignments sharpen, and users with different planted interests get different
interest intensities."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sigma_pyro.api import SigmaRecommender
from sigma_pyro.evaluation.interest_analysis import synthetic_labels, user_clusters

PLANTED = dict(
    synthetic_users=500,
    synthetic_items=150,
    synthetic_categories=4,
    num_interests=4,
    hidden_size=32,
    batch_size=32,
    kl_anneal_steps=100,
    progress=False,
    # On 150 items a prototype holds 2 of them under the default 0.01 after 20
    # epochs; a stronger balance keeps all four in use.
    balance_weight=0.1,
)


def recommender(epochs: int) -> SigmaRecommender:
    rec = SigmaRecommender.from_preset("synthetic", epochs=epochs, patience=epochs, **PLANTED)
    rec.load_data()
    return rec


@pytest.fixture(scope="module")
def untrained():
    rec = recommender(1)
    rec.build_module().eval()
    return rec


@pytest.fixture(scope="module")
def trained():
    rec = recommender(20)
    rec.fit(log=lambda line: None)
    return rec


def test_interest_head_predicts_well_below_chance(untrained, trained):
    before, after = untrained.interest_summary("valid"), trained.interest_summary("valid")
    assert before["chance_nll"] == pytest.approx(math.log(trained.dataset.num_items))
    assert before["nll_per_sequence"] > 0.95 * before["chance_nll"]
    # A head that knew each next item's planted category for sure and guessed uniformly
    # inside it would score ln(150 / 4) = 0.72 x chance here.
    assert after["nll_per_sequence"] < 0.9 * after["chance_nll"], after
    # As a recommender on its own it is far above popularity.
    popularity = trained.baselines("valid")["popularity"]["ndcg@20"]
    assert after["valid"]["ndcg@20"] > popularity + 0.1, (after, popularity)


def test_assignments_sharpen(untrained, trained):
    before, after = untrained.interest_summary("valid"), trained.interest_summary("valid")
    assert after["median_max_assignment"] > before["median_max_assignment"] + 0.15
    assert after["median_max_assignment"] > 0.5
    # No prototype is left empty, none takes every item.
    assert 0.05 < after["items_per_prototype_min_share"] <= 0.25


def test_intensities_differ_between_users_with_different_planted_interests(trained):
    rec = trained
    _, strongest = synthetic_labels(rec.dataset, rec.synthetic)
    learned = user_clusters(rec.module, rec.split.valid_history)
    # Users grouped by their planted strongest interest: each group's most common learned
    # strongest interest, which a user-blind prior would make the same for every group.
    modal = {g: np.bincount(learned[strongest == g]).argmax() for g in np.unique(strongest)}
    assert len(set(modal.values())) >= 3, modal
    summary = rec.interest_summary("valid")
    assert summary["intensity_entropy_mean"] < 0.9 * math.log(rec.config.model.num_interests)
