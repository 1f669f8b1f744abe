"""Calibration of the posterior predictive on the held-out item.

The predictive of a user is the guide's, p(i | history) = (1/S) sum_s p(i | z_s). Two views:

* the rank of the held-out item under it, over the full catalog with the history masked as
  in the evaluation, and a randomised PIT on the unmasked predictive: with items ordered by
  predictive probability, u = P(items more probable than the held-out one) + V p(held-out),
  V ~ U(0, 1), which is uniform exactly when the predictive is calibrated (piling up near 1
  means overconfident, near 0 underconfident);
* expected against observed hit rate at K: the model expects a hit with probability equal to
  the predictive mass of its top-K items; the observed rate is the share of held-out items
  ranked in the top K.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from sigma_pyro.evaluation.predict import top_k
from sigma_pyro.evaluation.ranking import target_ranks

KS = (1, 5, 10, 20)
PIT_BINS = 10


@dataclass
class UserCalibration:
    rank: np.ndarray  # [U] 0-based rank of the held-out item (pessimistic ties)
    pit: np.ndarray  # [U] randomised PIT value in [0, 1]
    expected_hits: np.ndarray  # [U, len(ks)] predictive mass of the top-K items
    hits: np.ndarray  # [U, len(ks)] held-out item ranked in the top K
    ks: tuple[int, ...]
    num_items: int

    @classmethod
    def concatenate(cls, parts: list[UserCalibration]) -> UserCalibration:
        return cls(
            *(
                np.concatenate([getattr(p, f) for p in parts])
                for f in ("rank", "pit", "expected_hits", "hits")
            ),
            parts[0].ks,
            parts[0].num_items,
        )

    @property
    def normalised_rank(self) -> np.ndarray:
        return self.rank / self.num_items


@torch.no_grad()
def score_users(
    log_predictive: torch.Tensor,
    targets: torch.Tensor,
    histories: torch.Tensor,
    ks: tuple[int, ...],
    mask_history: bool,
    noise: torch.Tensor,
) -> UserCalibration:
    """``log_predictive`` [U, N] over internal items 1..N, ``targets`` [U] internal ids,
    ``histories`` [U, H] 0-padded, ``noise`` [U] uniform draws for the randomised PIT."""
    num_items = log_predictive.shape[1]
    log_predictive = log_predictive.double()

    def scorer(start: int, stop: int) -> torch.Tensor:
        return log_predictive[:, start - 1 : stop - 1]

    rank = target_ranks(
        scorer, targets, histories, num_items, item_chunk_size=num_items, mask_history=mask_history
    )
    best, _ = top_k(scorer, num_items, max(ks), num_items, histories if mask_history else None)
    mass = best.exp().cumsum(dim=1)  # masked items score -inf: no mass
    columns = [min(k, num_items) - 1 for k in ks]
    probs = log_predictive.exp()
    target_prob = probs.gather(1, (targets - 1).unsqueeze(1))
    above = (probs * (probs > target_prob)).sum(dim=1)
    pit = above + noise.double() * target_prob.squeeze(1)
    return UserCalibration(
        rank.numpy(),
        pit.clamp(0, 1).numpy(),
        mass[:, columns].numpy(),
        (rank.unsqueeze(1) < torch.tensor(ks)).numpy(),
        tuple(ks),
        num_items,
    )


def summarise(calibration: UserCalibration) -> dict:
    """Hit rates per K with the binomial standard error the model itself implies, and the
    PIT histogram with a Kolmogorov-Smirnov test of uniformity."""
    users = len(calibration.rank)
    expected = calibration.expected_hits.mean(axis=0)
    observed = calibration.hits.mean(axis=0)
    # Each user's hit is Bernoulli(expected mass) under the model, independently.
    se = np.sqrt((calibration.expected_hits * (1 - calibration.expected_hits)).sum(axis=0)) / users
    rows = []
    for k, e, o, s in zip(calibration.ks, expected, observed, se, strict=True):
        z = (o - e) / s if s > 0 else math.inf * np.sign(o - e)
        verdict = "consistent" if abs(z) <= 2 else "overconfident" if o < e else "underconfident"
        rows.append(
            {
                "k": k,
                "expected": float(e),
                "observed": float(o),
                "se": float(s),
                "z": float(z),
                "verdict": verdict,
            }
        )
    counts, _ = np.histogram(calibration.pit, bins=PIT_BINS, range=(0.0, 1.0))
    return {
        "hit_rates": rows,
        "median_rank": float(np.median(calibration.rank)),
        "median_normalised_rank": float(np.median(calibration.normalised_rank)),
        "pit_counts": counts.tolist(),
        "pit_ks_pvalue": float(stats.kstest(calibration.pit, "uniform").pvalue),
        "pit_mean": float(calibration.pit.mean()),
    }
