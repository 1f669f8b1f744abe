"""PSIS diagnostic of the amortised guide (Yao, Vehtari, Simpson and Gelman, 2018).

For each user, log w_s = log p(x, z_s) - log q(z_s | x) over S guide draws, x the full
sequence with the held-out item as the last target and z every latent site. The Pareto
shape k-hat fitted to the largest weights says how far q is from the posterior: below 0.5
importance sampling with q converges quickly, 0.5-0.7 slowly, above 0.7 q misses mass that
the posterior has, and neither q's draws nor importance weights can be trusted.

The held-out log-likelihood is reported three ways: the plain mean over draws of
log p(y | z_s); the guide's predictive log mean_s p(y | z_s), what the recommender scores;
and the PSIS-corrected estimate of log p(y | history) under the model's exact posterior,
sum_s w~_s p(y | z_s) with w~ the smoothed weights of p(history, z_s) / q(z_s), i.e. the
weights above with every term that observes y removed (the guide never sees y, so q is a
proposal for the posterior given the history).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import arviz as az
import numpy as np
from scipy.special import logsumexp


@dataclass
class PsisResult:
    khat: np.ndarray  # [U] k-hat of the full-sequence weights
    khat_history: np.ndarray  # [U] k-hat of the history weights behind loglik_psis
    loglik_plain: np.ndarray  # [U] mean_s log p(y | z_s)
    loglik_guide: np.ndarray  # [U] log mean_s p(y | z_s)
    loglik_psis: np.ndarray  # [U] log sum_s w~_s p(y | z_s)
    num_samples: int

    @property
    def good_k(self) -> float:
        """The sample-size-dependent threshold of Vehtari et al. (2024), at most 0.7."""
        return min(1.0 - 1.0 / math.log10(self.num_samples), 0.7)

    def summary(self) -> dict:
        finite = np.isfinite(self.khat)
        quantiles = (
            np.quantile(self.khat[finite], [0.0, 0.25, 0.5, 0.75, 0.9, 1.0])
            if finite.any()
            else np.full(6, np.nan)
        )
        return {
            "khat_quantiles": dict(
                zip(
                    ("min", "q25", "median", "q75", "q90", "max"),
                    map(float, quantiles),
                    strict=True,
                )
            ),
            "share_above_0.5": float(np.mean(~(self.khat <= 0.5))),
            "share_above_0.7": float(np.mean(~(self.khat <= 0.7))),
            "good_k": self.good_k,
            "history_share_above_0.7": float(np.mean(~(self.khat_history <= 0.7))),
            "loglik_plain": float(self.loglik_plain.mean()),
            "loglik_guide": float(self.loglik_guide.mean()),
            "loglik_psis": float(self.loglik_psis.mean()),
        }


def pareto_diagnostic(draws) -> PsisResult:
    """From :class:`~sigma_pyro.diagnostics.draws.ModelDraws`. Guide draws are independent,
    so the relative efficiency is 1."""
    samples = draws.log_weight.shape[1]
    _, khat = az.psislw(draws.log_weight, reff=1.0)
    smoothed, khat_history = az.psislw(draws.log_weight - draws.heldout_terms, reff=1.0)
    return PsisResult(
        khat=np.asarray(khat),
        khat_history=np.asarray(khat_history),
        loglik_plain=draws.heldout_loglik.mean(axis=1),
        loglik_guide=logsumexp(draws.heldout_loglik, axis=1) - math.log(samples),
        loglik_psis=logsumexp(smoothed + draws.heldout_loglik, axis=1),
        num_samples=samples,
    )
