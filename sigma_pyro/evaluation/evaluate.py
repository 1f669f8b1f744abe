"""Full-ranking evaluation of a trained module on leave-one-out histories."""

from __future__ import annotations

import numpy as np
import torch

from sigma_pyro.config import EvalConfig
from sigma_pyro.data.batching import pad_right
from sigma_pyro.evaluation.predict import (
    InterestScorer,
    PosteriorScorer,
    last_position_representation,
)
from sigma_pyro.evaluation.ranking import evaluate_ranking
from sigma_pyro.runtime.distributed import SINGLE_PROCESS, World

HEADS = ("next_item", "interests")


def evaluate_module(
    module,
    histories: list[np.ndarray],
    targets: np.ndarray,
    config: EvalConfig,
    device="cpu",
    head: str = "next_item",
    *,
    world: World = SINGLE_PROCESS,
) -> dict:
    """Recall@K, NDCG@K and MRR of ``targets`` given ``histories`` over the full catalog.

    ``head="interests"`` ranks with SIGMA's interest head alone (max over the user's
    interests of the cosine score) instead of the decoder. The model sees the last
    ``max_seq_length`` history items; masking uses the whole history. With a ``world`` of
    several ranks, every rank calls this with the same arguments and scores its share of
    the users; all get the metrics of all users.
    """
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    # Users in order of history length, so each chunk pads to nearly its own length; the
    # metrics are means over users and do not depend on the order.
    order = np.argsort([len(h) for h in histories], kind="stable")
    histories = [histories[i] for i in order]
    targets = np.asarray(targets)[order]
    # Masking needs every history item, not only those in the model's window.
    full_histories = pad_right(histories, max(len(h) for h in histories))
    targets_tensor = torch.as_tensor(targets, dtype=torch.long)

    def scorer(users: slice):
        if head == "interests":
            return InterestScorer.for_histories(module, histories[users], device)
        representation = last_position_representation(
            module, histories[users], device, config.posterior_samples
        )
        return PosteriorScorer(module, representation, config.item_chunk_size)

    with module.evaluating():
        return evaluate_ranking(
            scorer,
            targets_tensor,
            full_histories,
            module.num_items,
            user_chunk_size=config.eval_batch_size,
            item_chunk_size=config.item_chunk_size,
            mask_history=config.mask_history,
            ks=config.ks,
            world=world,
        )
