"""What changes as training goes on: the KL weight by step, the interest weight and the
assignment temperature by epoch, and each rank's seed."""

from __future__ import annotations

import math

import numpy as np

from sigma_pyro.config import Config


def kl_scale(config: Config, step: int) -> float:
    """Scale of the z site: beta_t, ramping linearly up to ``kl_cap``.

    The scale multiplies the KL of z summed over its dimensions at each real position, so
    ``kl_cap`` is in ELBO units: a cap of 1 is the true ELBO, and a cap of 0.05 weighs a
    nat of KL per token at 1/20 of a nat of next-item likelihood. (Until 0.2 this was
    divided by the latent size, which left the prior a weight of ~0.0016 a token: no say.)
    The ramp starts at one step's worth, since poutine.scale needs a positive scale.
    """
    t = config.train
    ramp = 1.0 if t.kl_anneal_steps == 0 else min(1.0, (step + 1) / t.kl_anneal_steps)
    return t.kl_cap * ramp


def rank_seed(seed: int, rank: int) -> int:
    """Rank 0 keeps the configured seed (a one-process run is rank 0 of a world of one);
    every other rank draws its own dropout and z noise."""
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def interest_scale(config: Config, epoch: int) -> float:
    """The MIE weight of the authors' code: starts high to shape the interests, then decays
    linearly to a floor (max(1, 200 - epoch) * 1e-3 with the default settings)."""
    t = config.train
    return max(t.interest_weight_end, t.interest_weight_start - t.interest_weight_decay * epoch)


def assignment_temperature(config: Config, epoch: int) -> float:
    """The annealed temperature of the MIE assignments at ``epoch`` (0-based): geometric
    from ``assignment_temperature_start`` to ``assignment_temperature`` over
    ``assignment_anneal_epochs``, then held. Soft assignments first let the prototypes find
    the categories before sharp ones commit items to them (started sharp, the prototypes
    lock onto whatever the random initial embeddings separate: docs/interests.md)."""
    m = config.model
    if m.assignment_anneal_epochs == 0:
        return m.assignment_temperature
    done = min(1.0, epoch / m.assignment_anneal_epochs)
    start, end = math.log(m.assignment_temperature_start), math.log(m.assignment_temperature)
    return math.exp(start + done * (end - start))
