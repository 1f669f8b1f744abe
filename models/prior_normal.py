"""Standard normal prior N(0, I): the unimodal prior of ContrastVAE-style recommenders."""

from __future__ import annotations

import pyro.distributions as dist
import torch

from sigma_pyro.models.priors import LatentPrior, PriorInputs, register_prior


@register_prior("normal")
class StandardNormalPrior(LatentPrior):
    def forward(self, inputs: PriorInputs):
        shape = (*inputs.batch_shape, inputs.latent_dim)
        zero = torch.zeros((), device=inputs.device)
        return dist.Normal(zero, 1.0).expand(shape).to_event(1)
