"""The amortised guide: a causal transformer encoder gives q(z_t | x_<=t) = N(mu_t, sigma_t)
for every position. (The interests of the MIE part are a deterministic function of the
observed items, computed by the model; they have no latent site.)

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
        loc, scale = module.encode(batch.items)
        if not module.prior.stochastic:
            batch.handoff["z"] = loc
            return
        with pyro.plate("sequences", num_sequences, dim=-2):
            with pyro.plate("positions", length, dim=-1), poutine.scale(scale=kl_scale):
                pyro.sample("z", dist.Normal(loc, scale).to_event(1).mask(batch.mask))
