"""One run of the prior comparison: train a configuration and measure it (test metrics,
held-out likelihood, recommendation diversity, recovery of planted structure), and the
reference points of the data every run is measured on."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sigma_pyro.config import Config
from sigma_pyro.evaluation.interest_analysis import (
    item_clusters,
    nmf_item_topics,
    planted_recovery,
    recommendation_diversity,
    synthetic_labels,
)
from sigma_pyro.experiments.metrics import METRICS
from sigma_pyro.inference.iwae import iwae_log_likelihood
from sigma_pyro.runtime.checkpoint import STATE_FILE

DIVERSITY_K = 20


def reference_categories(rec, split) -> tuple[np.ndarray, str]:
    """One item partition for every prior's diversity (see :mod:`interest_analysis`)."""
    if rec.synthetic is not None:
        return synthetic_labels(rec.dataset, rec.synthetic)[0], "planted categories"
    k = rec.config.model.num_interests
    topics = nmf_item_topics(split.test_history, rec.dataset.num_items, k)
    return topics, f"{k} NMF topics of the user-item matrix of the test histories"


def train_and_measure(
    config: Config, run_dir: Path, iwae_samples: int, log: Callable[[str], None]
) -> dict:
    """Train one configuration and measure it: one row of ``results.csv``."""
    from sigma_pyro.api import SigmaRecommender

    rec = SigmaRecommender(config)
    rec.load_data()
    started = time.perf_counter()
    summary = rec.fit(out_dir=run_dir, resume=(run_dir / STATE_FILE).is_file(), log=log)
    seconds = time.perf_counter() - started
    test = rec.evaluate("test")
    # The unannealed ELBO of the next-item part (what every prior shares), per token.
    terms = summary.history[-1].terms if summary.history else {}
    elbo = -(terms["nll"] + terms["kl_z"]) if terms else math.nan
    row = {
        **{m: test[m] for m in METRICS},
        "final_elbo_per_token": elbo,
        "iwae_per_token": _iwae_per_token(rec, iwae_samples),
        **_diversity(rec),
        "best_epoch": summary.best_epoch,
        "epochs": summary.epochs_run,
        "stopped_early": summary.stopped_early,
        "wall_seconds": round(seconds, 1),
    }
    if rec.synthetic is not None:
        row.update(planted_recovery(rec.module, rec.dataset, rec.synthetic, rec.split.test_history))
    return row


def _iwae_per_token(rec, samples: int) -> float:
    # On the larger catalogs the IWAE costs about S/3 training epochs; 0 skips it.
    if samples == 0:
        return math.nan
    # The training batch size is known to fit in memory with the full softmax at every
    # position, which the IWAE computes too.
    cfg = rec.config
    return iwae_log_likelihood(
        rec.module,
        rec.dataset.sequences,
        samples,
        cfg.train.batch_size,
        device=cfg.train.device,
    )["per_token"]


def _diversity(rec) -> dict[str, float]:
    """Distinct reference categories, and distinct clusters of the prior's own (NaN for a
    prior without clusters), among each test user's top items."""
    module, split, cfg = rec.module, rec.split, rec.config
    options = dict(
        k=DIVERSITY_K,
        batch_size=cfg.eval.eval_batch_size,
        item_chunk_size=cfg.eval.item_chunk_size,
        device=cfg.train.device,
    )
    reference, _ = reference_categories(rec, split)
    own = item_clusters(module)
    return {
        f"diversity@{DIVERSITY_K}": recommendation_diversity(
            module, split.test_history, reference, **options
        ),
        f"diversity_own@{DIVERSITY_K}": (
            math.nan
            if own is None
            else recommendation_diversity(module, split.test_history, own, **options)
        ),
    }


def baselines(config: Config) -> dict:
    """``baselines.json`` of a comparison: the reference points of
    :meth:`~sigma_pyro.api.SigmaRecommender.baselines` on test, the data's size and source,
    and the partition that diversity counts categories of."""
    from sigma_pyro.api import SigmaRecommender

    rec = SigmaRecommender(config)
    rec.load_data()
    _, description = reference_categories(rec, rec.split)
    return {
        **rec.baselines("test"),
        "diversity_reference": description,
        "num_users": rec.dataset.num_users,
        "num_items": rec.dataset.num_items,
        "data": rec.dataset.source,
    }
