"""The deterministic twin: no latent noise and no KL term.

z_t is the encoder's mean itself, so the program is a SASRec-style causal transformer with
the same decoder and full-softmax next-item likelihood. Comparing it with ``normal`` and
``sigma`` measures what the variational part buys. It is selected like a prior
(``--prior deterministic``) so every command and the comparison runner take it unchanged,
but it has no ``z`` sample site: the model and guide hand the encoder mean over instead.
"""

from __future__ import annotations

from sigma_pyro.models.priors import LatentPrior, PriorInputs, register_prior


@register_prior("deterministic")
class NoLatentNoise(LatentPrior):
    stochastic = False

    def forward(self, inputs: PriorInputs):
        raise TypeError("the deterministic variant has no distribution over z")
