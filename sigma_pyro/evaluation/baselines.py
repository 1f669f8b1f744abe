"""Reference points for the metrics: popularity and, on synthetic data, the Bayes-optimal
ranking."""

from __future__ import annotations

import torch

from sigma_pyro.config import EvalConfig
from sigma_pyro.data.batching import pad_right
from sigma_pyro.data.dataset import LeaveOneOutSplit
from sigma_pyro.evaluation.ranking import PopularityRecommender, evaluate_ranking


def baseline_metrics(
    data: LeaveOneOutSplit, split: str, num_items: int, eval_config: EvalConfig, synthetic=None
) -> dict[str, dict]:
    """Popularity (counts over the histories of ``split``, valid or else test, all of which
    the model may see) and, with the ``synthetic`` generator, the Bayes-optimal ranking
    under its true next-item law."""
    histories, targets = (
        (data.valid_history, data.valid_target)
        if split == "valid"
        else (data.test_history, data.test_target)
    )
    popularity = PopularityRecommender().fit(histories, num_items)
    out = {
        "popularity": evaluate_ranking(
            popularity.score_items_for_users,
            torch.as_tensor(targets),
            pad_right(histories, max(map(len, histories))),
            num_items,
            ks=eval_config.ks,
            mask_history=eval_config.mask_history,
        )
    }
    if synthetic is not None:
        out["bayes_optimal"] = synthetic.bayes_optimal_metrics(eval_config.ks, split)
    return out
