"""The negative ELBO as an ``nn.Module``, so that DistributedDataParallel can own SVI's
gradient step.

This is the idea of Pyro's ``ELBOModule`` (``Trace_ELBO()(model, guide)``): a module whose
forward is ``elbo.differentiable_loss(model, guide, ...)``. Pyro's version registers model
and guide as submodules, which needs them to be ``nn.Module``s; ours are plain callables
that share one :class:`~sigma_pyro.nn.module.SigmaModule`, so the SigmaModule is the one
registered submodule and DDP sees every parameter exactly once.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pyro.infer import ELBO
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from sigma_pyro.models.sequential_vae import Precomputed
from sigma_pyro.runtime.distributed import World


class ElboLoss(nn.Module):
    """``forward(batch, kl_scale, interest_scale)`` is ``loss_weight`` times the annealed
    negative ELBO of ``batch``, differentiable in the module's parameters.

    ``batch=None`` (a rank whose share of a small global batch is empty) gives a zero that
    still touches every parameter, so DDP's all-reduce sees this rank's (zero) gradients.
    """

    def __init__(self, module: nn.Module, model: Callable, guide: Callable, elbo: ELBO):
        super().__init__()
        self.module = module
        self.model, self.guide, self.elbo = model, guide, elbo

    def forward(
        self, batch, kl_scale: float, interest_scale: float, loss_weight: float = 1.0
    ) -> torch.Tensor:
        if batch is None:
            return sum(p.sum() for p in self.module.parameters()) * 0.0
        args = (batch, kl_scale, interest_scale)
        if self.module.prior.stochastic and self.module.config.kl_free_bits > 0:
            # The model's free-bits allowance needs the guide's q(z | x): encoded once and
            # handed to both, so that both see the same dropout masks.
            args += (Precomputed(encoding=self.module.encode(batch.items)),)
        loss = self.elbo.differentiable_loss(self.model, self.guide, *args)
        return loss * loss_weight


def data_parallel(loss: ElboLoss, world: World, device: torch.device, probe) -> nn.Module:
    """``loss`` wrapped in DDP when there are several ranks, else ``loss`` itself.

    Which parameters a step touches depends on the configuration (the deterministic prior
    never uses the scale head), and DDP must be told when some never get a gradient. One
    forward and backward on ``probe`` finds out, with the RNG and gradients put back, so
    the common case keeps DDP's cheaper path without the search for unused parameters.
    """
    if not world.distributed:
        return loss
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        loss(probe, 1.0, 1.0).backward()
    unused = any(p.grad is None for p in loss.module.parameters())
    loss.module.zero_grad(set_to_none=True)
    return DistributedDataParallel(
        loss,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=unused,
    )
