"""Is SIGMA's multi-interest part alive? Measurements of the interest head and of the
assignments on a split, as ``train`` records them in metrics.json under ``"interests"``."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from torch.nn import functional as F

from sigma_pyro.config import EvalConfig
from sigma_pyro.evaluation.evaluate import evaluate_module
from sigma_pyro.evaluation.predict import last_position_interests, last_position_representation


@torch.no_grad()
def interest_summary(
    module,
    histories: list[np.ndarray],
    targets: np.ndarray,
    config: EvalConfig,
    device="cpu",
) -> dict | None:
    """None for a prior without interests, else:

    - ``nll_per_sequence``: the interest head's NLL of each target over the full catalog
      (whatever likelihood trained it), mean over users; ``chance_nll`` = ln(num_items);
      ``main_nll_per_sequence``: the same for the main head at the posterior mean of z (the
      representation that ranking uses), the yardstick for what the history tells;
    - ``valid``: the interest head alone as a recommender (``ndcg@20``, ``recall@20``), the
      same full ranking with history masking as the main head;
    - ``median_max_assignment``: median over the histories' items of their largest
      assignment (1/K when flat, 1 when hard);
    - ``items_per_prototype_min_share``: share of the catalog in the smallest prototype
      (each item in its argmax prototype);
    - ``intensity_entropy_mean``: mean over users of the entropy (nats) of their interest
      intensities after the history (ln K when uniform).
    """
    if module.interests is None:
        return None
    with module.evaluating():
        nll, main_nll, assignments, entropies = [], [], [], []
        for start in range(0, len(histories), config.eval_batch_size):
            chunk = histories[start : start + config.eval_batch_size]
            at_last, assignment = last_position_interests(module, chunk, device)
            logits = module.interest_logits(at_last.loc)
            target = torch.as_tensor(
                np.asarray(targets[start : start + len(chunk)]) - 1, device=logits.device
            )
            nll.append(F.cross_entropy(logits.float(), target, reduction="none").cpu())
            main_nll.append(main_head_nll(module, chunk, target, config, device).cpu())
            assignments.append(assignment.max(dim=-1).values.cpu())
            p = at_last.intensity.clamp_min(1e-12)
            entropies.append(-(p * p.log()).sum(dim=-1).cpu())
        catalog = module.interest_item_vectors(
            torch.arange(1, module.num_items + 1, device=module.item_embedding.weight.device)
        )
        owners = module.interests.assign(catalog).argmax(dim=-1)
        sizes = torch.bincount(owners, minlength=module.config.num_interests)
        ranking = evaluate_module(
            module,
            histories,
            targets,
            dataclasses.replace(config, ks=[20], posterior_samples=0),
            device,
            head="interests",
        )
    return {
        "nll_per_sequence": float(torch.cat(nll).mean()),
        "chance_nll": math.log(module.num_items),
        "main_nll_per_sequence": float(torch.cat(main_nll).mean()),
        "valid": {"ndcg@20": ranking["ndcg@20"], "recall@20": ranking["recall@20"]},
        "median_max_assignment": float(torch.cat(assignments).median()),
        "items_per_prototype_min_share": float(sizes.min()) / module.num_items,
        "intensity_entropy_mean": float(torch.cat(entropies).mean()),
        "assignment_temperature": float(module.interests.temperature),
        "interest_temperature": float(module.interest_temperature),
    }


def main_head_nll(
    module, histories: list[np.ndarray], target: torch.Tensor, config: EvalConfig, device
) -> torch.Tensor:
    """The main head's NLL [B] of each target (classes 0..N-1) after its history, with the
    softmax normaliser summed chunk by chunk so that memory stays bounded on big catalogs."""
    representation = last_position_representation(module, histories, device).float()
    chunk = config.item_chunk_size
    normaliser = torch.stack(
        [
            module.item_logits(representation, a, min(a + chunk, module.num_items + 1))
            .float()
            .logsumexp(dim=-1)
            for a in range(1, module.num_items + 1, chunk)
        ]
    ).logsumexp(dim=0)
    weight = module.item_embedding.weight[1:][target].float()
    observed = (representation * weight).sum(-1) + module.item_bias[target].float()
    return normaliser - observed
