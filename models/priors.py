"""The registry of priors over the sequence representation z.

A prior is an ``nn.Module`` that returns a Pyro distribution with batch shape [B, L] and
event shape [D] for the ``z`` site. Adding a prior is one file in ``models/`` that
subclasses :class:`LatentPrior` and decorates it with :func:`register_prior`, plus its
import at the bottom of this file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from pyro.distributions import TorchDistribution
from torch import nn

from sigma_pyro.nn.interests import Interests

PRIORS: dict[str, type[LatentPrior]] = {}


@dataclass
class PriorInputs:
    batch_shape: tuple[int, int]  # (sequences, positions)
    latent_dim: int
    interests: Interests | None  # set when the prior asks for them
    device: torch.device
    module: nn.Module | None = None  # the SigmaModule, for priors that use its networks


class LatentPrior(nn.Module):
    """Base class: subclasses set ``requires_interests`` and implement ``forward``.

    ``stochastic`` is False only for the deterministic variant, which has no ``z`` site."""

    name: ClassVar[str]
    requires_interests: ClassVar[bool] = False
    stochastic: ClassVar[bool] = True

    def __init__(self, config):
        super().__init__()
        self.config = config

    def forward(self, inputs: PriorInputs) -> TorchDistribution:  # pragma: no cover - abstract
        raise NotImplementedError


def register_prior(name: str):
    def decorate(cls):
        if name in PRIORS:
            raise ValueError(f"prior {name!r} registered twice")
        cls.name = name
        PRIORS[name] = cls
        return cls

    return decorate


def build_prior(config) -> LatentPrior:
    return PRIORS[config.prior](config)


# Importing the modules registers them; they need the registry above, hence at the end.
from sigma_pyro.models import (  # noqa: E402, F401
    prior_deterministic,
    prior_gmm,
    prior_normal,
    prior_sigma,
    prior_sigma_uniform,
    prior_vamp,
)
