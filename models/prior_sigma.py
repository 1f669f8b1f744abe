"""The semantic Gaussian mixture prior of SIGMA.

p(z_t | x_<=t) = sum_k pi_tk N(mu_tk, diag sigma_tk^2): one component per user interest,
weighted by the interest's intensity, all computed causally from the prefix. The KL from the
guide to this mixture has no closed form; Trace_ELBO estimates it by Monte Carlo.
"""

from __future__ import annotations

import pyro.distributions as dist

from sigma_pyro.models.priors import LatentPrior, PriorInputs, register_prior


@register_prior("sigma")
class SemanticMixturePrior(LatentPrior):
    requires_interests = True

    def forward(self, inputs: PriorInputs):
        interests = inputs.interests
        components = dist.Normal(interests.component_loc, interests.scale).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(probs=interests.intensity), components)
