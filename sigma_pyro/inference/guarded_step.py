"""One SVI gradient step that never applies a non-finite loss or gradient, with every rank
of a data-parallel run agreeing on the outcome."""

from __future__ import annotations

import math

import pyro
import torch
from pyro.infer.util import zero_grads

from sigma_pyro.errors import TrainingError
from sigma_pyro.inference.objective import first_non_finite_site
from sigma_pyro.runtime.distributed import World, all_sum


def guarded_step(
    loss, optimizer, module, shard, beta: float, lam: float, world: World
) -> tuple[float, list[str]]:
    """One gradient step on this rank's ``shard`` that refuses to apply a non-finite
    loss or gradient: the parameters stay as they were, so the error can name the site
    on the healthy model and nothing poisoned is ever saved. Returns the global batch's
    loss and the parameters with bad gradients; every rank returns the same.

    Each rank's loss is weighted by the world size because DDP averages gradients over
    ranks while the ELBO sums over sequences: the update is the global batch's.
    """
    # Pyro's argument validation re-checks every [tokens x items] logits tensor on every
    # step; a non-finite loss is caught here, and first_non_finite_site re-runs the
    # batch with validation on to name the site.
    with pyro.validation_enabled(False):
        try:
            local = loss(shard, beta, lam, float(world.size))
        except ValueError:  # a distribution rejected a NaN parameter
            local = None
    value = math.nan if local is None else local.item() / world.size
    # Summed before any backward, so that all ranks agree to stop on a non-finite loss
    # instead of one of them leaving the others waiting in DDP's all-reduce.
    total = float(all_sum(torch.tensor(value, dtype=torch.float64), world))
    params = list(module.parameters())
    bad: list[str] = []
    if math.isfinite(total):
        local.backward()
        norms = [p.grad.norm() for p in params if p.grad is not None]
        if norms and not torch.isfinite(torch.stack(norms)).all():
            bad = [
                name
                for name, p in module.named_parameters()
                if p.grad is not None and not torch.isfinite(p.grad).all()
            ]
        else:
            optimizer(params)
    zero_grads(params)
    return total, bad


def refuse_bad_step(
    module, batch, device, beta: float, lam: float, loss: float, bad, where: str
) -> None:
    """The TrainingError for a step :func:`guarded_step` refused, naming the site of a
    non-finite loss (re-run on the global ``batch``, moved to ``device`` only then) or the
    parameters of a non-finite gradient; nothing when the step was applied."""
    if not math.isfinite(loss):
        site = first_non_finite_site(module, batch.to(device), beta, lam)
        raise TrainingError(
            f"non-finite ELBO at {where}{f' ({site})' if site else ''}; "
            "the last good checkpoint is kept"
        )
    if bad:
        raise TrainingError(
            f"non-finite gradient at {where} in {len(bad)} parameters "
            f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}"
            "); not applied, the last good checkpoint is kept"
        )
