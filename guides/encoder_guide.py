"""The amortised guide: a causal transformer encoder gives q(z_t | x_<=t) = N(mu_t, sigma_t)
for every position, and the interest module gives q(h_k | x) = N(mu_Tk, sigma_Tk) from the
interests at each sequence's last position.

It takes the same arguments as the model, and scales each site as the model does, so an
annealed KL term is scaled on both sides (as in Pyro's DMM example).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
from pyro import poutine

from sigma_pyro.data.batching import SequenceBatch


class TransformerEncoderGuide:
    def __init__(self, module):
        self.module = module

    def __call__(self, batch: SequenceBatch, kl_scale: float = 1.0, interest_scale: float = 1.0):
        module = self.module
        pyro.module("sigma", module)
        num_sequences, length = batch.items.shape
        mask = batch.mask
        loc, scale = module.encode(batch.items)
        if module.prior.requires_interests:
            interests = module.extract_interests(batch.items, mask)
            # The interests are a deterministic function of the observed items, needed by
            # the model's prior too: hand them over instead of computing them twice. The
            # model pops them, so a second particle recomputes its own graph.
            batch.handoff["interests"] = interests
            with module.interest_plate(num_sequences) as rows:
                last = mask[rows].sum(dim=1) - 1
                with poutine.scale(scale=interest_scale):
                    pyro.sample("interests", dist.Normal(interests.loc[rows, last].unsqueeze(1),
                                                         interests.scale[rows, last].unsqueeze(1))
                                .to_event(2))
        if not module.prior.stochastic:
            batch.handoff["z"] = loc
            return
        with pyro.plate("sequences", num_sequences, dim=-2):
            with pyro.plate("positions", length, dim=-1), poutine.scale(scale=kl_scale):
                pyro.sample("z", dist.Normal(loc, scale).to_event(1).mask(mask))
