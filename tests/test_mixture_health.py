"""The mixture-health verdict of ``diagnose`` on planted mixtures: the degenerate state
SIGMA's prior was trained into (components a fraction of a scale apart, near-uniform
weights) and a healthy one (separated components, user-specific weights)."""

from __future__ import annotations

import types

import numpy as np
import pyro.distributions as dist
import torch

from sigma_pyro.diagnostics.draw_sites import mixture_at
from sigma_pyro.diagnostics.mixture import mixture_health
from sigma_pyro.diagnostics.verdicts import mixture_verdict

USERS, SAMPLES, K, D = 40, 6, 4, 16


def planted_draws(separation: float, concentration: float, seed: int = 0):
    """Draws of users whose last-position prior is a K-component mixture with means
    ``separation`` scales apart on orthogonal axes, weights peaked on one user-specific
    component by ``concentration`` (0: uniform), and z drawn from that mixture."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.full((USERS, 1, K, D), 0.5)
    # Two orthogonal axes of length a are a * sqrt(2) apart: a * sqrt(2 / D) per dimension.
    axes = torch.eye(K, D) * separation * 0.5 * (D / 2) ** 0.5
    loc = axes.expand(USERS, 1, K, D) + 0.01 * torch.randn(USERS, 1, K, D, generator=g)
    favourite = torch.arange(USERS) % K
    logits = concentration * torch.nn.functional.one_hot(favourite, K).float().unsqueeze(1)
    mixture = dist.MixtureSameFamily(
        dist.Categorical(logits=logits), dist.Normal(loc, scale).to_event(1)
    )
    rows = torch.arange(USERS).repeat_interleave(SAMPLES)
    last = torch.zeros_like(rows)
    z_last = mixture.sample((SAMPLES,)).transpose(0, 1).reshape(-1, 1, D)[:, 0]
    expanded = dist.MixtureSameFamily(
        dist.Categorical(logits=logits[rows]), dist.Normal(loc[rows], scale[rows]).to_event(1)
    )

    def per_draw(x):
        return x.reshape(USERS, SAMPLES, *x.shape[1:])

    fields = {
        k: v.numpy()
        for k, v in mixture_at(expanded, torch.arange(len(rows)), last, z_last, per_draw).items()
    }
    return types.SimpleNamespace(kl_last=np.ones((USERS, SAMPLES)), latent_dim=D, **fields)


def test_the_degenerate_state_is_called_degenerate():
    health = mixture_health(planted_draws(separation=0.002, concentration=0.05))
    assert health.overlapping and health.uniform_weights
    assert mixture_verdict(health).startswith("**degenerate**")


def test_a_planted_healthy_mixture_is_called_healthy():
    health = mixture_health(planted_draws(separation=3.0, concentration=3.0))
    summary = health.summary()
    assert summary["separation_median"] > 2.5
    assert not health.overlapping and not health.uniform_weights and not health.collapsed
    assert mixture_verdict(health).startswith("**healthy**")


def test_separation_just_under_one_scale_overlaps():
    assert mixture_health(planted_draws(separation=0.8, concentration=3.0)).overlapping
    assert not mixture_health(planted_draws(separation=1.3, concentration=3.0)).overlapping
