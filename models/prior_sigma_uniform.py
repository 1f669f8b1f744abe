"""Ablation of SIGMA's mixture weights: the user's interests, equally weighted.

The components are SIGMA's (one Gaussian per interest, computed causally from the prefix);
the weights are uniform over the *active* interests, those whose intensity exceeds half the
uniform share 1/K (the strongest one is always active, so the mixture is never empty).
Comparing it with ``sigma`` isolates what the intensities contribute beyond choosing which
interests are present.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch

from sigma_pyro.models.priors import LatentPrior, PriorInputs, register_prior


def active_interests(intensity: torch.Tensor) -> torch.Tensor:
    """Boolean [..., K]: intensity above 1/(2K), or the strongest interest."""
    k = intensity.shape[-1]
    strongest = torch.nn.functional.one_hot(intensity.argmax(dim=-1), k).bool()
    return (intensity > 1.0 / (2 * k)) | strongest


@register_prior("sigma-uniform")
class UniformInterestMixturePrior(LatentPrior):
    requires_interests = True

    def forward(self, inputs: PriorInputs):
        interests = inputs.interests
        active = active_interests(interests.intensity)
        # -inf logits give inactive interests exactly zero weight (probs would be clamped
        # to a tiny positive value by Categorical).
        logits = torch.zeros_like(interests.intensity).masked_fill(~active, float("-inf"))
        components = dist.Normal(interests.component_loc, interests.scale).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(logits=logits), components)
