"""Explanations in terms of SIGMA's interests: what each hyper-category holds, and which of
a user's interests put a recommended item forward.

A recommended item is credited to the interest that ranks it highest under the interest
head's own rule (the largest cosine similarity between the interest's mean and the item,
:meth:`~sigma_pyro.nn.module.SigmaModule.interest_cosine`), with the interest's intensity
and the history items that carry it: those whose strongest assignment is that
hyper-category, most recent first. The main head's ranking is not decomposed: this says
which interest the item belongs with, not how much of its score that interest made.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from sigma_pyro.data.batching import pad_right
from sigma_pyro.data.dataset import ItemVocabulary
from sigma_pyro.errors import ConfigError
from sigma_pyro.models.priors import PRIORS


@dataclass
class Explanation:
    interest: int  # index of the hyper-category (prototype)
    intensity: float  # the user's weight on that interest after the history
    history: list[int]  # internal ids of the history items that carry it, most recent first


def require_interests(module) -> None:
    if module.interests is None:
        with_interests = ", ".join(n for n, p in PRIORS.items() if p.requires_interests)
        raise ConfigError(
            f"interests and explanations need a prior with interests ({with_interests}); "
            f"this model's prior is {module.config.prior!r}"
        )


@torch.no_grad()
def item_assignments(module) -> torch.Tensor:
    """Soft assignment [N, K] of every item (row i is internal id i + 1) to the K
    hyper-categories."""
    require_interests(module)
    items = torch.arange(1, module.num_items + 1, device=module.item_embedding.weight.device)
    with module.evaluating():
        return module.interests.assign(module.interest_item_vectors(items))


def typical_items(assignment: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per hyper-category its ``n`` most strongly assigned items: (probabilities, internal
    ids), each [K, n]."""
    probabilities, rows = assignment.T.topk(min(n, assignment.shape[0]), dim=1)
    return probabilities, rows + 1


def catalog_shares(assignment: torch.Tensor) -> torch.Tensor:
    """Share [K] of the catalog whose strongest assignment is each hyper-category."""
    counts = torch.bincount(assignment.argmax(dim=1), minlength=assignment.shape[1])
    return counts.float() / assignment.shape[0]


@torch.no_grad()
def explain_items(
    module, histories: list[np.ndarray], items: list[np.ndarray], device
) -> list[list[Explanation]]:
    """One explanation per item of ``items[b]`` (internal ids) for the user of
    ``histories[b]``, seeing the last ``max_seq_length`` history items as the model does."""
    require_interests(module)
    window = pad_right(histories, module.config.max_seq_length).to(device)
    mask = window != 0
    candidates = pad_right(items, max(1, max(len(i) for i in items))).to(device)
    with module.evaluating():
        interests = module.interests_after(window, mask)
        # [B, K, n]: the interest that ranks each candidate highest is the argmax over K.
        winners = module.interest_cosine(interests.loc, candidates).argmax(dim=1)
    strongest = interests.assignment.argmax(dim=-1).masked_fill(~mask, -1)
    out = []
    for b, row in enumerate(items):
        recent = window[b, mask[b]].flip(0).cpu().numpy()
        carriers = strongest[b, mask[b]].flip(0).cpu().numpy()
        out.append(
            [
                Explanation(
                    int(k),
                    float(interests.intensity[b, k]),
                    recent[carriers == int(k)].tolist(),
                )
                for k in winners[b, : len(row)].tolist()
            ]
        )
    return out


def interest_table(
    module, items: ItemVocabulary, n: int, titles: dict[str, str] | None = None
) -> pd.DataFrame:
    """Each hyper-category with its ``share`` of the catalog and its ``n`` most typical
    items by assignment ``probability``: columns interest, share, rank, item (raw id),
    probability, and ``title`` when ``titles`` maps raw ids to titles."""
    assignment = item_assignments(module)
    probabilities, ids = typical_items(assignment, n)
    shares = catalog_shares(assignment)
    frame = pd.DataFrame(
        {
            "interest": np.repeat(np.arange(len(shares)), probabilities.shape[1]),
            "share": np.repeat(shares.cpu().numpy(), probabilities.shape[1]),
            "rank": np.tile(np.arange(1, probabilities.shape[1] + 1), len(shares)),
            "item": items.decode(ids.flatten().tolist()),
            "probability": probabilities.flatten().cpu().numpy(),
        }
    )
    if titles is not None:
        frame["title"] = frame["item"].map(titles).fillna("")
    return frame
