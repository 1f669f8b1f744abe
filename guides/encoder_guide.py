"""The amortised guide: a causal transformer encoder gives q(z_t | x_<=t) = N(mu_t, sigma_t)
for every position. (The interests of the MIE part are a deterministic function of the
observed items, computed by the model; they have no latent site.)

It takes the same arguments as the model (including what a caller precomputed), and scales
each site as the model does, so an annealed KL term is scaled on both sides (as in Pyro's
DMM example).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
from pyro import poutine

from sigma_pyro.data.batching import SequenceBatch
from sigma_pyro.models.sequential_vae import NOTHING_PRECOMPUTED, Precomputed, encoding_of


class TransformerEncoderGuide:
    def __init__(self, module):
        self.module = module

    def __call__(
        self,
        batch: SequenceBatch,
        kl_scale: float = 1.0,
        interest_scale: float = 1.0,
        precomputed: Precomputed = NOTHING_PRECOMPUTED,
    ):
        module = self.module
        pyro.module("sigma", module)
        if not module.prior.stochastic:
            return  # nothing latent: the model computes the encoder mean itself
        num_sequences, length = batch.items.shape
        loc, scale = encoding_of(module, batch, precomputed)
        with pyro.plate("sequences", num_sequences, dim=-2):
            with pyro.plate("positions", length, dim=-1), poutine.scale(scale=kl_scale):
                pyro.sample("z", dist.Normal(loc, scale).to_event(1).mask(batch.mask))
