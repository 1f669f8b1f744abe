"""The generative model of SIGMA (and of its prior variants).

For each sequence b and position t (plates ``sequences`` x ``positions``, padding masked):

    z_bt ~ prior(z | x_b,<=t)                  site "z", KL-annealed by poutine.scale
    x_b,t+1 ~ Categorical(softmax(decoder(z_b,<=t)_t . E^T + bias))     site "next_item"

(the ``deterministic`` variant has no ``z`` site: z_bt is the encoder mean, handed over by
the guide), and, when the prior is built from user interests (the MIE-VAE part), at each sequence's
last position T (the interests of the whole training prefix, as in the authors' MIE loss):

    h_bk ~ N(0, I)                             site "interests", scaled by the interest weight
    x_b,T+1 ~ Categorical(max_k cos(h_bk, E) / tau)                site "interest_next_item"
    factor -w * ||C C^T - I||^2 / K^2 per token                    site "orthogonality"

so the whole objective is one ELBO that Trace_ELBO estimates. The next-item site is computed
only at real (non-padding) positions, gathered into a ``tokens`` plate first: most positions
of a padded batch are padding, and the full softmax dominates the cost. For catalogs where
the full softmax does not fit, ``likelihood: sampled`` replaces it with a sampled softmax
over popularity-sampled negatives with the log-Q correction, still as the ``next_item``
observation site. The interest
likelihood scores K vectors per position, so it is kept to the last position, where it costs
about as much as the main likelihood instead of K times it.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from sigma_pyro.data.batching import SequenceBatch
from sigma_pyro.models.priors import PriorInputs
from sigma_pyro.nn.distributions import FusedCategorical


class SequentialVAEModel:
    def __init__(self, module):
        self.module = module

    def __call__(self, batch: SequenceBatch, kl_scale: float = 1.0, interest_scale: float = 1.0):
        module = self.module
        pyro.module("sigma", module)
        num_sequences, length = batch.items.shape
        mask = batch.mask
        prior_needs_interests = module.prior.requires_interests
        interests = batch.handoff.pop("interests", None) if prior_needs_interests else None
        if prior_needs_interests and interests is None:
            interests = module.extract_interests(batch.items, mask)

        targets = batch.targets[mask] - 1                # internal ids 1..N -> classes 0..N-1
        if interests is not None:
            with module.interest_plate(num_sequences) as rows:
                last = mask[rows].sum(dim=1) - 1
                last_loc = interests.loc[rows, last].unsqueeze(1)        # [b, 1, K, D]
                with poutine.scale(scale=interest_scale):
                    h = pyro.sample("interests", dist.Normal(torch.zeros_like(last_loc), 1.0)
                                    .to_event(2))
                    pyro.sample("interest_next_item",
                                FusedCategorical(logits=module.interest_logits(h)),
                                obs=batch.targets[rows, last].unsqueeze(1) - 1)
        if module.prior.stochastic:
            with pyro.plate("sequences", num_sequences, dim=-2):
                with pyro.plate("positions", length, dim=-1):
                    prior = module.prior(PriorInputs((num_sequences, length), module.latent_dim,
                                                     interests, batch.items.device, module))
                    with poutine.scale(scale=kl_scale):
                        z = pyro.sample("z", prior.mask(mask))
        else:
            z = batch.handoff.pop("z", None)
            if z is None:
                z = module.encode(batch.items)[0]

        representation = module.decode(z)[mask]          # [M, D], M real positions
        with pyro.plate("tokens", targets.shape[0]):
            if module.config.likelihood == "sampled":
                # The observed outcome is "the target wins among itself and the negatives".
                logits = module.sampled_logits(representation, targets, module.config.negatives)
                pyro.sample("next_item", FusedCategorical(logits=logits),
                            obs=torch.zeros_like(targets))
            else:
                pyro.sample("next_item", module.next_item_distribution(representation),
                            obs=targets)
        if interests is not None and module.config.orthogonality_weight > 0:
            # Weighted per token so the weight means the same as in per-token losses.
            penalty = module.interests.orthogonality_penalty()
            pyro.factor("orthogonality",
                        -module.config.orthogonality_weight * targets.shape[0] * penalty)
