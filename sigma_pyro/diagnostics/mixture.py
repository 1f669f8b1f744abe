"""Health of the mixture prior and of the posterior over z.

A component is *used* by a user whose prior mixture weight for it exceeds 0.1, and
*occupied* by one whose z draws it explains with mean posterior responsibility above 0.1
(with more than five components, above half the uniform share, 1/(2K), instead: the
``sigma-uniform`` prior's rule, so that a uniform mixture of many components counts as
used); a component no user uses has collapsed. A mixture can also degenerate without
collapsing: components whose means lie well within one scale of each other act as a single
Gaussian, and user-specific weights that are near uniform for every user carry nothing about
the user. Posterior collapse is judged by the Monte Carlo KL from q(z | x) to the prior at
the last position: below 0.01 nats per latent dimension for most users, the encoder no
longer informs z and the decoder predicts from the prior alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

USE_THRESHOLD = 0.1
COLLAPSE_NATS_PER_DIM = 0.01
# Component means closer than one component scale (RMS per dimension) overlap: their
# densities are then one bump, not K.
OVERLAP_SEPARATION = 1.0
# Prior weights are "near uniform" when their effective number exceeds this share of K.
UNIFORM_SHARE = 0.9


@dataclass
class MixtureHealth:
    kl_per_dim: np.ndarray  # [U] MC KL(q || p) at the last position / D
    mean_weight: np.ndarray | None = None  # [K] average prior weight over users
    users_using: np.ndarray | None = None  # [K] users with prior weight > threshold
    mean_responsibility: np.ndarray | None = None  # [K]
    users_occupying: np.ndarray | None = None  # [K] ... responsibility > threshold
    mean_scale: np.ndarray | None = None  # [K] mean component scale over users
    separation: np.ndarray | None = None  # [U] see ModelDraws.component_separation
    weight_components: np.ndarray | None = None  # [U] effective number of prior weights
    user_specific: bool = False  # weights differ between users (not gmm, vamp)
    threshold: float = USE_THRESHOLD

    @property
    def is_mixture(self) -> bool:
        return self.mean_weight is not None

    @property
    def collapsed(self) -> list[int]:
        return [] if not self.is_mixture else np.flatnonzero(self.users_using == 0).tolist()

    @property
    def unoccupied(self) -> list[int]:
        return [] if not self.is_mixture else np.flatnonzero(self.users_occupying == 0).tolist()

    @property
    def overlapping(self) -> bool:
        return self.is_mixture and float(np.median(self.separation)) < OVERLAP_SEPARATION

    @property
    def uniform_weights(self) -> bool:
        return self.user_specific and float(np.median(self.weight_components)) > (
            UNIFORM_SHARE * len(self.mean_weight)
        )

    @property
    def collapse_share(self) -> float:
        return float(np.mean(self.kl_per_dim < COLLAPSE_NATS_PER_DIM))

    @property
    def posterior_collapse(self) -> bool:
        return self.collapse_share > 0.5

    def summary(self) -> dict:
        out = {
            "kl_per_dim_median": float(np.median(self.kl_per_dim)),
            "collapse_share": self.collapse_share,
            "posterior_collapse": self.posterior_collapse,
        }
        if self.is_mixture:
            out.update(
                components=len(self.mean_weight),
                use_threshold=self.threshold,
                collapsed=self.collapsed,
                unoccupied=self.unoccupied,
                effective_components=effective_components(self.mean_responsibility),
                separation_median=float(np.median(self.separation)),
                weight_components_median=float(np.median(self.weight_components)),
                overlapping=self.overlapping,
                uniform_weights=self.uniform_weights,
            )
        return out


def effective_components(shares: np.ndarray) -> float:
    """exp(entropy) of the average shares: K when all are equal, 1 when one takes all."""
    shares = shares / shares.sum()
    nonzero = shares[shares > 0]
    return float(np.exp(-(nonzero * np.log(nonzero)).sum()))


def mixture_health(draws) -> MixtureHealth:
    """From :class:`~sigma_pyro.diagnostics.draws.ModelDraws`."""
    health = MixtureHealth(kl_per_dim=draws.kl_last.mean(axis=1) / draws.latent_dim)
    if draws.mixture_weights is None:
        return health
    responsibility = draws.responsibility.mean(axis=1)  # [U, K]
    weights = draws.mixture_weights
    health.threshold = min(USE_THRESHOLD, 0.5 / weights.shape[1])
    health.mean_weight = weights.mean(axis=0)
    health.users_using = (weights > health.threshold).sum(axis=0)
    health.mean_responsibility = responsibility.mean(axis=0)
    health.users_occupying = (responsibility > health.threshold).sum(axis=0)
    health.user_specific = bool(weights.std(axis=0).max() > 1e-6)
    health.mean_scale = draws.component_scale.mean(axis=0)
    health.separation = draws.component_separation
    health.weight_components = np.array([effective_components(w) for w in weights])
    return health
