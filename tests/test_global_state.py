"""fit() must leave a notebook user's own Pyro parameters and RNG stream alone."""

from __future__ import annotations

import pyro
import torch

from helpers import TINY
from sigma_pyro.api import SigmaRecommender


def test_fit_keeps_the_callers_param_store_and_rng():
    pyro.clear_param_store()
    mine = pyro.param("my_own_weight", torch.tensor([1.5, -2.0]))
    torch.manual_seed(1234)
    rng_before = torch.get_rng_state()

    rec = SigmaRecommender.from_preset("synthetic", **TINY)
    rec.fit(log=lambda line: None)

    store = pyro.get_param_store()
    assert list(store.keys()) == ["my_own_weight"], "training's parameters stay in its scope"
    torch.testing.assert_close(store["my_own_weight"], mine)
    assert torch.equal(torch.get_rng_state(), rng_before), "the global RNG stream is untouched"


def test_fit_is_reproducible_whatever_the_callers_seed():
    scores = []
    for outside_seed in (0, 99):
        torch.manual_seed(outside_seed)
        rec = SigmaRecommender.from_preset("synthetic", **TINY)
        summary = rec.fit(log=lambda line: None)
        scores.append(summary.best_valid["ndcg@10"])
    assert scores[0] == scores[1]
