"""The generative model of SIGMA (and of its prior variants).

For each sequence b and position t (plates ``sequences`` x ``positions``, padding masked):

    z_bt ~ prior(z | x_b,<=t)                  site "z", KL-annealed by poutine.scale
    x_b,t+1 ~ Categorical(softmax(decoder(z_b,<=t)_t . E^T + bias))     site "next_item"

(the ``deterministic`` variant has no ``z`` site: z_bt is the encoder mean, computed here).
With ``kl_free_bits`` = lambda > 0 a factor site ``kl_free_bits``, at the KL's weight,
adds -max(0, lambda * tokens - KL_hat), where KL_hat is the batch's one-sample estimate
log q(z) - log p(z) at the sampled z: the KL then costs nothing up to lambda nats a token.
When the prior is built from user interests (the MIE-VAE part), the interests
I_bt = (mu_btk, sigma_btk, pi_btk) are a deterministic, causal function of x_b,<=t, and

    x_b,t+1 ~ Categorical(max_k cos(mu_btk, E) / tau)   site "interest_next_item", weight lambda
    factor -w_o * ||C C^T - I||^2 / K^2                  site "orthogonality"  } each per token,
    factor -w_b * std/mean of batch-mean intensities     site "balance"        } so a weight means
    factor -w_s * mean assignment entropy                site "sharpness"      } what it would in
                                                                                 a per-token loss
so the whole objective is one ELBO (plus weighted auxiliary terms) that Trace_ELBO
estimates. The interest means are deterministic, not latent: scoring a *sample* of a
latent interest under a KL to N(0, I) made the ELBO optimum the prior itself (means of norm
~0.05 under unit noise), so the head predicted at chance and the mixture was one Gaussian.
Their spread lives where SIGMA uses it, in the mixture components of z's prior, whose scales
the KL of z learns.

The next-item site is computed only at real (non-padding) positions, gathered into a
``tokens`` plate first: most positions of a padded batch are padding, and the full softmax
dominates the cost. For catalogs where the full softmax does not fit, ``likelihood:
sampled`` replaces it with a sampled softmax over popularity-sampled negatives with the
log-Q correction, still as the ``next_item`` observation site. The interest head scores K
vectors per position, so it runs on a subsample of ``interest_subsample`` positions a batch
(Pyro scales it up to an unbiased estimate).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from sigma_pyro.data.batching import SequenceBatch
from sigma_pyro.models.priors import PriorInputs
from sigma_pyro.nn.distributions import FusedCategorical
from sigma_pyro.nn.interests import Interests, balance_penalty, sharpness_penalty


@dataclass(frozen=True)
class Precomputed:
    """What a caller already holds for a batch, passed to model and guide alike (both take
    it as their last argument, so Trace_ELBO hands it to each).

    ``encoding`` is the guide's (loc, scale) of q(z | x) and ``interests`` the MIE part's
    interests: deterministic functions of the items, which a caller that scores many draws
    of one batch (IWAE, the diagnostics) computes once instead of once per trace.
    ``likelihood`` overrides the configured next-item likelihood ("full": the exact softmax,
    which held-out scores need where training used the sampled one)."""

    encoding: tuple[torch.Tensor, torch.Tensor] | None = None
    interests: Interests | None = None
    likelihood: str | None = None


NOTHING_PRECOMPUTED = Precomputed()


def encoding_of(module, batch: SequenceBatch, precomputed: Precomputed):
    return precomputed.encoding if precomputed.encoding is not None else module.encode(batch.items)


def scored_interests(
    config, batch: SequenceBatch, interests: Interests
) -> tuple[torch.Tensor, torch.Tensor]:
    """The interest means [M, K, D] that the interest head scores and their next items [M]
    (classes 0..N-1): at every real position, or at each sequence's last one."""
    mask = batch.mask
    if config.interest_positions == "last":
        rows = torch.arange(mask.shape[0], device=mask.device)
        last = mask.sum(dim=1) - 1
        return interests.loc[rows, last], batch.targets[rows, last] - 1
    scored = batch.scored
    return interests.loc[scored], batch.targets[scored] - 1


class SequentialVAEModel:
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
        num_sequences, length = batch.items.shape
        mask = batch.mask
        interests = None
        if module.prior.requires_interests:
            interests = precomputed.interests
            if interests is None:
                interests = module.extract_interests(batch.items, mask)

        # Every real position has a z; the scored ones also have a next item (a prefix
        # sample's last position only).
        scored = batch.scored
        targets = batch.targets[scored] - 1  # internal ids 1..N -> classes 0..N-1
        if interests is not None:
            self.interest_head(batch, interests, interest_scale)
        if module.prior.stochastic:
            with pyro.plate("sequences", num_sequences, dim=-2):
                with pyro.plate("positions", length, dim=-1):
                    prior = module.prior(
                        PriorInputs(
                            (num_sequences, length),
                            module.latent_dim,
                            interests,
                            batch.items.device,
                            module,
                        )
                    )
                    with poutine.scale(scale=kl_scale):
                        z = pyro.sample("z", prior.mask(mask))
            if module.config.kl_free_bits > 0:
                with poutine.scale(scale=kl_scale):
                    pyro.factor("kl_free_bits", -self.kl_shortfall(batch, z, prior, precomputed))
        else:
            z = encoding_of(module, batch, precomputed)[0]

        representation = module.decode(z, mask.sum(dim=1))[scored]  # [M, D], M targets
        with pyro.plate("tokens", targets.shape[0]):
            if (precomputed.likelihood or module.config.likelihood) == "sampled":
                # The observed outcome is "the target wins among itself and the negatives".
                logits = module.sampled_logits(representation, targets, module.config.negatives)
                pyro.sample(
                    "next_item", FusedCategorical(logits=logits), obs=torch.zeros_like(targets)
                )
            else:
                pyro.sample("next_item", module.next_item_distribution(representation), obs=targets)
        if interests is not None:
            self.interest_penalties(interests, mask, targets.shape[0])

    def kl_shortfall(self, batch: SequenceBatch, z, prior, precomputed: Precomputed):
        """How far the batch's Monte Carlo KL of z falls short of its free allowance
        (``kl_free_bits`` nats per real token), zero when it does not.

        Added to the loss at the KL's own weight, it makes the loss constant in the KL below
        the allowance: the same one-sample estimate as Trace_ELBO's z site, at the same z,
        so the two gradients cancel exactly there."""
        module, mask = self.module, batch.mask
        if precomputed.encoding is None and module.training:
            # A second encoder pass would draw other dropout masks than the guide's.
            raise ValueError("free bits in training need the guide's encoding in `precomputed`")
        loc, scale = encoding_of(module, batch, precomputed)
        log_q = dist.Normal(loc, scale).to_event(1).log_prob(z)
        kl = torch.where(mask, log_q - prior.log_prob(z), torch.zeros_like(log_q)).sum()
        return (module.config.kl_free_bits * batch.num_tokens - kl).clamp_min(0.0)

    def interest_head(self, batch: SequenceBatch, interests: Interests, scale: float) -> None:
        """The MIE likelihood: each scored position's interests predict its next item."""
        module = self.module
        loc, targets = scored_interests(module.config, batch, interests)
        with module.interest_plate(targets.shape[0]) as chosen, poutine.scale(scale=scale):
            pyro.sample(
                "interest_next_item",
                FusedCategorical(logits=module.interest_logits(loc[chosen])),
                obs=targets[chosen],
            )

    def interest_penalties(self, interests: Interests, mask: torch.Tensor, tokens: int) -> None:
        config = self.module.config
        extractor = self.module.interests
        rows = torch.arange(mask.shape[0], device=mask.device)
        last = mask.sum(dim=1) - 1
        penalties = {
            "orthogonality": (config.orthogonality_weight, extractor.orthogonality_penalty),
            "balance": (
                config.balance_weight,
                lambda: balance_penalty(interests.intensity[rows, last]),
            ),
            "sharpness": (
                config.sharpness_weight,
                lambda: sharpness_penalty(interests.assignment, mask),
            ),
        }
        for name, (weight, penalty) in penalties.items():
            if weight > 0:
                pyro.factor(name, -weight * tokens * penalty())
