"""Multi-interest extraction: hyper-category prototypes and causal per-user interests."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

_MIN_SCALE = 1e-3


@dataclass
class Interests:
    """Per sequence and position t, the user's K interests from items up to t.

    ``intensity`` [B, L, K] sums to one over K (the mixture weights); ``loc`` and ``scale``
    [B, L, K, D] are each interest's Gaussian; ``assignment`` [B, L, K] is each item's soft
    membership of the K hyper-categories.
    """

    assignment: torch.Tensor
    intensity: torch.Tensor
    loc: torch.Tensor
    scale: torch.Tensor


class InterestExtractor(nn.Module):
    """Soft-assigns items to K unit-norm prototypes and aggregates them causally.

    The interests at position t are prefix sums over positions <= t, so the mixture prior of
    z_t never sees the item z_t must predict (the public SIGMA code aggregates the whole
    sequence, which leaks future items into the prior).
    """

    def __init__(self, hidden_size: int, num_interests: int, temperature: float = 1.0,
                 trainable_prototypes: bool = True):
        super().__init__()
        self.temperature = temperature
        prototypes = torch.empty(num_interests, hidden_size)
        # Orthogonal initialisation starts at the penalty's minimum.
        nn.init.orthogonal_(prototypes)
        self.raw_prototypes = nn.Parameter(prototypes, requires_grad=trainable_prototypes)
        self.log_variance = nn.Sequential(
            nn.Linear(2 * hidden_size, hidden_size), nn.Tanh(), nn.Linear(hidden_size, hidden_size)
        )

    @property
    def prototypes(self) -> torch.Tensor:
        return F.normalize(self.raw_prototypes, dim=-1)

    def orthogonality_penalty(self) -> torch.Tensor:
        """||C C^T - I||_F^2 / K^2 on the unit-norm prototypes."""
        c = self.prototypes.float()
        k = c.shape[0]
        return (c @ c.T - torch.eye(k, device=c.device)).pow(2).sum() / k**2

    def assign(self, item_vectors: torch.Tensor) -> torch.Tensor:
        """Soft assignment of item embeddings [..., D] to prototypes, [..., K]."""
        return torch.softmax(item_vectors @ self.prototypes.T / self.temperature, dim=-1)

    def forward(self, item_vectors: torch.Tensor, mask: torch.Tensor) -> Interests:
        """``item_vectors`` [B, L, D] embeddings of the input items, ``mask`` [B, L]."""
        # float32 throughout, also under mixed precision: these parameterise densities.
        item_vectors = item_vectors.float()
        weights = mask.unsqueeze(-1).float()
        assignment = self.assign(item_vectors).float() * weights
        mass = assignment.cumsum(dim=1)                                   # [B, L, K]
        count = weights.cumsum(dim=1).clamp_min(1.0)                      # [B, L, 1]
        intensity = mass / count
        weighted = (assignment.unsqueeze(-1) * item_vectors.unsqueeze(-2)).cumsum(dim=1)
        loc = weighted / mass.unsqueeze(-1).clamp_min(1e-6)               # [B, L, K, D]
        prototypes = self.prototypes.expand(loc.shape)
        log_var = self.log_variance(torch.cat([prototypes, loc], dim=-1)).float().clamp(-10.0, 5.0)
        scale = (0.5 * log_var).exp() + _MIN_SCALE
        # Numerically empty interests keep a valid (tiny) weight so log-densities stay finite.
        return Interests(assignment, intensity.clamp_min(1e-8), loc, scale)
