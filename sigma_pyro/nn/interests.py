"""Multi-interest extraction: hyper-category prototypes and causal per-user interests."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

_MIN_SCALE = 1e-3
# A learnable temperature could otherwise run to zero (hard assignments, no gradient).
_MIN_TEMPERATURE = 0.02


@dataclass
class Interests:
    """Per sequence and position t, the user's K interests from items up to t.

    ``intensity`` [B, L, K] sums to one over K (the mixture weights); ``loc`` [B, L, K, D] is
    each interest's mean in the item space of the MIE part (what the interest head scores);
    ``component_loc`` and ``scale`` [B, L, K, D] are its Gaussian component of z's prior;
    ``assignment`` [B, L, K] is each item's soft membership of the K hyper-categories (zero
    at padding).
    """

    assignment: torch.Tensor
    intensity: torch.Tensor
    loc: torch.Tensor
    component_loc: torch.Tensor
    scale: torch.Tensor


class InterestExtractor(nn.Module):
    """Soft-assigns items to K unit-norm prototypes and aggregates them causally.

    The assignment is a softmax of cosine similarities over a temperature. Cosine, not dot
    products: item embeddings start with norms near 0.2, so dot products with unit
    prototypes are all near zero and every assignment starts (and stays) uniform. The
    temperature is either learned (in log space, floored) or a buffer that training anneals
    (``anneal_temperature``, the default schedule).

    Each interest's mean is mapped affinely into z's space for its mixture component: the
    MIE part's item vectors and the encoder's z are different spaces, and without the map
    the components sit where no posterior z is, so their learned scales grow to cover the
    gap and the K components blur into one Gaussian.

    With ``decay`` < 1 the sums weigh the item s positions back by decay^s, so that means
    and intensities follow what the user did lately (1: plain means over the prefix).

    The interests at position t are prefix sums over positions <= t, so the mixture prior of
    z_t never sees the item z_t must predict (the public SIGMA code aggregates the whole
    sequence, which leaks future items into the prior).
    """

    def __init__(
        self,
        hidden_size: int,
        num_interests: int,
        temperature: float = 0.1,
        trainable_prototypes: bool = True,
        learn_temperature: bool = False,
        decay: float = 1.0,
    ):
        super().__init__()
        self.decay = decay
        prototypes = torch.empty(num_interests, hidden_size)
        # Orthogonal initialisation starts at the penalty's minimum.
        nn.init.orthogonal_(prototypes)
        # Fixed ones are buffers, not frozen parameters: pyro.module warns on every step about
        # a parameter that does not require grad. Both save under the same state_dict key.
        log_temperature = torch.tensor(math.log(temperature))
        for name, value, learned in (
            ("raw_prototypes", prototypes, trainable_prototypes),
            ("log_temperature", log_temperature, learn_temperature),
        ):
            if learned:
                self.register_parameter(name, nn.Parameter(value))
            else:
                self.register_buffer(name, value)
        self.to_latent = nn.Linear(hidden_size, hidden_size)
        self.log_variance = nn.Sequential(
            nn.Linear(2 * hidden_size, hidden_size), nn.Tanh(), nn.Linear(hidden_size, hidden_size)
        )

    @property
    def prototypes(self) -> torch.Tensor:
        return F.normalize(self.raw_prototypes, dim=-1)

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp().clamp_min(_MIN_TEMPERATURE)

    @torch.no_grad()
    def anneal_temperature(self, value: float) -> None:
        """Set a fixed (buffer) temperature to its annealing schedule's value. It is saved
        with the weights, so that a checkpoint is scored with the temperature it trained at."""
        if isinstance(self.log_temperature, nn.Parameter):
            raise ValueError("a learned assignment temperature cannot be annealed")
        self.log_temperature.fill_(math.log(value))

    def orthogonality_penalty(self) -> torch.Tensor:
        """||C C^T - I||_F^2 / K^2 on the unit-norm prototypes."""
        c = self.prototypes.float()
        k = c.shape[0]
        return (c @ c.T - torch.eye(k, device=c.device)).pow(2).sum() / k**2

    def assign(self, item_vectors: torch.Tensor) -> torch.Tensor:
        """Soft assignment of item embeddings [..., D] to prototypes, [..., K]."""
        cosine = F.normalize(item_vectors.float(), dim=-1) @ self.prototypes.float().T
        return torch.softmax(cosine / self.temperature, dim=-1)

    def forward(self, item_vectors: torch.Tensor, mask: torch.Tensor) -> Interests:
        """``item_vectors`` [B, L, D] embeddings of the input items, ``mask`` [B, L]."""
        # float32 throughout, also under mixed precision: these parameterise densities.
        item_vectors = item_vectors.float()
        weights = mask.unsqueeze(-1).float()
        assignment = self.assign(item_vectors) * weights
        if self.decay == 1.0:
            mass = assignment.cumsum(dim=1)  # [B, L, K]
            count = weights.cumsum(dim=1)  # [B, L, 1]
            weighted = (assignment.unsqueeze(-1) * item_vectors.unsqueeze(-2)).cumsum(dim=1)
        else:
            # sum_{s<=t} decay^(t-s) x_s = decay^t cumsum(decay^-s x_s), in float64: decay^-s
            # spans decay^-(L-1).
            position = torch.arange(mask.shape[1], device=mask.device, dtype=torch.float64)
            grow = (-position * math.log(self.decay)).exp().view(1, -1, 1)
            shrink = 1.0 / grow

            def decayed_cumsum(x):
                shape = grow.shape + (1,) * (x.dim() - 3)
                return (x.double() * grow.view(shape)).cumsum(dim=1).mul(shrink.view(shape)).float()

            mass, count = decayed_cumsum(assignment), decayed_cumsum(weights)
            weighted = decayed_cumsum(assignment.unsqueeze(-1) * item_vectors.unsqueeze(-2))
        return self._gaussians(assignment, mass, count.clamp_min(1e-6), weighted)

    def at_last(self, item_vectors: torch.Tensor, mask: torch.Tensor) -> Interests:
        """The interests after each whole history, ``forward(...)`` at the last real
        position only ([B, K(, D)] fields; ``assignment`` stays [B, L, K]), without the L
        times larger prefix tensors: what ranking with the interest head needs."""
        item_vectors = item_vectors.float()
        weights = mask.unsqueeze(-1).float()
        if self.decay != 1.0:
            last = mask.sum(dim=1, keepdim=True) - 1
            age = (last - torch.arange(mask.shape[1], device=mask.device)).clamp_min(0)
            weights = weights * self.decay ** age.unsqueeze(-1).float()
        assignment = self.assign(item_vectors) * mask.unsqueeze(-1)
        weighted = torch.einsum("blk,bld->bkd", assignment * weights, item_vectors)
        return self._gaussians(
            assignment,
            (assignment * weights).sum(dim=1),
            weights.sum(dim=1).clamp_min(1e-6),
            weighted,
        )

    def _gaussians(self, assignment, mass, count, weighted) -> Interests:
        """Intensities and components from the assignment mass [..., K], the item count
        [..., 1] and the assignment-weighted item sums [..., K, D]."""
        loc = weighted / mass.unsqueeze(-1).clamp_min(1e-6)
        prototypes = self.prototypes.expand(loc.shape)
        log_var = self.log_variance(torch.cat([prototypes, loc], dim=-1)).float().clamp(-10.0, 5.0)
        scale = (0.5 * log_var).exp() + _MIN_SCALE
        # Numerically empty interests keep a valid (tiny) weight so log-densities stay finite.
        return Interests(
            assignment, (mass / count).clamp_min(1e-8), loc, self.to_latent(loc).float(), scale
        )


def balance_penalty(intensity: torch.Tensor) -> torch.Tensor:
    """Coefficient of variation (std / mean) over K of the batch-averaged intensities
    ``intensity`` [B, K]: zero when every prototype carries the same share of the batch, so
    no prototype dies and none takes every item."""
    usage = intensity.mean(dim=0)
    return usage.std(unbiased=False) / usage.mean().clamp_min(1e-8)


def sharpness_penalty(assignment: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of the real items' assignments [B, L, K]: zero when each item
    belongs to one prototype, ln K when it is spread evenly. The authors' code uses a
    cross-entropy against each assignment's own argmax; the entropy pushes the same way,
    without a non-differentiable target."""
    p = assignment[mask].clamp_min(1e-12)
    return -(p * p.log()).sum(dim=-1).mean()
