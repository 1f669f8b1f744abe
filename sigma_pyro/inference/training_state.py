"""The resumable training state in ``last.pt``: weights, optimiser, every rank's RNG and
where training stands, written after each epoch and read back by ``--resume``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sigma_pyro.config import Config, flag
from sigma_pyro.errors import CheckpointError
from sigma_pyro.runtime.checkpoint import (
    FORMAT_VERSION,
    atomic_torch_save,
    library_versions,
    safe_torch_load,
)
from sigma_pyro.runtime.distributed import World, all_gather


@dataclass
class Progress:
    """Where training stands; saved with the resumable state."""

    epoch: int = 0
    step: int = 0
    best: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    best_valid: dict[str, float] = field(default_factory=dict)

    def improved(self, epoch: int, valid: dict[str, float], metric: str) -> None:
        self.best, self.best_epoch, self.best_valid = valid[metric], epoch, valid
        self.bad_epochs = 0


def write_state(
    path: Path, config: Config, module, optimizer, progress: Progress, world: World, device
) -> None:
    """Every rank's RNG joins the state, so every rank calls this; rank 0 alone writes."""
    cuda = device.type == "cuda"
    rngs = all_gather(torch.get_rng_state(), world)
    cuda_rngs = all_gather(torch.cuda.get_rng_state(device) if cuda else None, world)
    if not world.is_main:
        return
    atomic_torch_save(
        {
            "format_version": FORMAT_VERSION,
            "versions": library_versions(),
            "config": config.to_dict(),
            "module": module.state_dict(),
            "optimizer": optimizer.get_state(),
            "rng": rngs[0],
            "cuda_rng": cuda_rngs[0],
            "world_size": world.size,
            "rank_rng": rngs,
            "rank_cuda_rng": cuda_rngs,
            "epoch": progress.epoch,
            "step": progress.step,
            "best": progress.best,
            "best_epoch": progress.best_epoch,
            "bad_epochs": progress.bad_epochs,
            "best_valid": progress.best_valid,
        },
        path,
    )


def read_state(path: Path, config: Config, device) -> dict:
    """The state in ``path``, refused when its format or model settings differ from
    ``config``'s."""
    state = safe_torch_load(path, map_location=device)
    version = state.get("format_version") if isinstance(state, dict) else None
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {version!r}, expected "
            f"{FORMAT_VERSION}; train again without --resume"
        )
    saved, current = state.get("config", {}).get("model", {}), config.to_dict()["model"]
    changed = sorted(
        flag(name) for name in saved.keys() & current.keys() if saved[name] != current[name]
    )
    if changed:
        raise CheckpointError(
            f"{path}: written with other model settings "
            f"({', '.join(changed)}); resume with the same ones"
        )
    return state


def restore_state(
    state: dict, path: Path, module, optimizer, progress: Progress, world: World, device
) -> int:
    """Put ``state`` back into the module, optimiser, this rank's RNG and ``progress``;
    returns the world size that wrote it.

    A checkpoint of N ranks resumes bit for bit in N ranks (each takes back its own RNG
    stream) and statistically in one process (rank 0's stream); any other world size is
    refused, since the ranks' streams cannot be handed out again.
    """
    saved_size = state.get("world_size", 1)
    if world.size > 1 and saved_size != world.size:
        raise CheckpointError(
            f"{path}: written by {saved_size} process(es), resumed "
            f"with {world.size}; resume with {saved_size} or with one"
        )
    rngs = state.get("rank_rng") or [state["rng"]]
    cuda_rngs = state.get("rank_cuda_rng") or [state["cuda_rng"]]
    try:
        module.load_state_dict(state["module"])
        optimizer.set_state(state["optimizer"])
        # map_location moved every tensor to the device; RNG states live on the CPU.
        torch.set_rng_state(rngs[world.rank].cpu())
        if cuda_rngs[world.rank] is not None and device.type == "cuda":
            torch.cuda.set_rng_state(cuda_rngs[world.rank].cpu(), device)
        progress.epoch, progress.step = state["epoch"], state["step"]
        progress.best, progress.best_epoch = state["best"], state["best_epoch"]
        progress.bad_epochs, progress.best_valid = state["bad_epochs"], state["best_valid"]
    except (KeyError, RuntimeError, TypeError, AttributeError) as err:
        raise CheckpointError(
            f"{path}: cannot resume from it ({str(err).splitlines()[0]})"
        ) from None
    return saved_size
