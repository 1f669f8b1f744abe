"""VampPrior (Tomczak & Welling, 2018): the prior is the guide's own posterior, averaged over
learnable pseudo-inputs.

p(z) = (1/M) sum_m q(z | u_m), where each pseudo-input u_m is a learnable sequence of
``PSEUDO_LENGTH`` input vectors run through the guide's encoder; the component is the
posterior at its last position, as a user's z_t is the posterior after the prefix up to t.
The prior thus moves with the encoder and is the same for every user and position.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch import nn

from sigma_pyro.models.priors import LatentPrior, PriorInputs, register_prior

PSEUDO_LENGTH = 4


@register_prior("vamp")
class VampPrior(LatentPrior):
    def __init__(self, config):
        super().__init__(config)
        length = min(PSEUDO_LENGTH, config.max_seq_length)
        # The item embeddings' initial scale, so the encoder first sees inputs like real items.
        self.pseudo_inputs = nn.Parameter(
            0.02 * torch.randn(config.pseudo_inputs, length, config.hidden_size)
        )

    def forward(self, inputs: PriorInputs):
        if inputs.module is None:
            raise ValueError("the VampPrior needs the module whose encoder defines it")
        loc, scale = inputs.module.encode_vectors(self.pseudo_inputs)
        components = dist.Normal(loc[:, -1], scale[:, -1]).to_event(1)
        count = self.pseudo_inputs.shape[0]
        uniform = dist.Categorical(logits=torch.full((count,), -math.log(count), device=loc.device))
        return dist.MixtureSameFamily(uniform, components).expand(inputs.batch_shape)
