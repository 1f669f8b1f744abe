"""A learnable Gaussian mixture prior shared by all users.

p(z) = sum_k pi_k N(m_k, diag s_k^2) with K = ``num_interests`` components whose weights,
means and scales are parameters. It is SIGMA's mixture without the semantics: the components
are the same for every user and position, so any gain of ``sigma`` over ``gmm`` is due to
conditioning the mixture on the user's interests rather than to multimodality alone.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from sigma_pyro.models.priors import LatentPrior, PriorInputs, register_prior


@register_prior("gmm")
class GaussianMixturePrior(LatentPrior):
    def __init__(self, config):
        super().__init__(config)
        k, d = config.num_interests, config.hidden_size
        self.logits = nn.Parameter(torch.zeros(k))
        # Unit-scale components with N(0, I) means: at initialisation the mixture is spread
        # like the standard normal prior, so early training starts from familiar ground.
        self.loc = nn.Parameter(torch.randn(k, d))
        self.log_scale = nn.Parameter(torch.zeros(k, d))

    def forward(self, inputs: PriorInputs):
        components = dist.Normal(self.loc, self.log_scale.exp()).to_event(1)
        mixture = dist.MixtureSameFamily(dist.Categorical(logits=self.logits), components)
        return mixture.expand(inputs.batch_shape)
