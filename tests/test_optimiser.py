"""The optimiser settings reach Pyro's ClippedAdam."""

from __future__ import annotations

from helpers import TINY
from sigma_pyro.api import SigmaRecommender


def test_weight_decay_shrinks_the_weights():
    # A decay this strong dominates the gradient, so each Adam step moves every weight about
    # lr towards zero: the three steps of an epoch shrink the small embeddings visibly.
    norms = {}
    for decay in (0.0, 100.0):
        rec = SigmaRecommender.from_preset("synthetic", **TINY, weight_decay=decay)
        rec.fit(log=lambda line: None)
        norms[decay] = float(rec.module.item_embedding.weight.norm())
    assert norms[100.0] < 0.95 * norms[0.0]  # 0.455 against 0.524 when written
