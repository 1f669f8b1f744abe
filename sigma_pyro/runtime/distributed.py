"""Where this process stands in a torch.distributed job, and the few collectives training
and evaluation need.

``torchrun`` starts one process per rank and tells each its place through the environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``); a plain
``python`` run has none of these and is a world of one, in which everything here is a
no-op; the training and evaluation code is the same either way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from sigma_pyro.errors import SigmaPyroError

# How long a rank waits in a collective for the others before giving up. torchrun notices a
# dead worker within seconds and stops the rest; this bounds a hang when it cannot (a node
# that vanished from a multi-node job). SIGMA_PYRO_DIST_TIMEOUT (seconds) overrides it.
_DEFAULT_TIMEOUT_S = 600


class DistributedError(SigmaPyroError):
    """The launcher's environment is malformed, or a rank lost contact with the others."""


@dataclass(frozen=True)
class World:
    """This process's rank among ``size`` processes (``local_rank`` on its own node).

    ``distributed`` is whether a launcher started it, which torchrun with one process also
    does: that world of one goes through the process group, DDP and the collectives, so a
    1-GPU machine can check the distributed path.
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    distributed: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes files, logs and draws progress bars."""
        return self.rank == 0

    @classmethod
    def from_environment(cls, environ=None) -> World:
        """The world torchrun describes in the environment; a world of one without it."""
        env = os.environ if environ is None else environ
        if "WORLD_SIZE" not in env:
            return cls()
        values = {}
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
            raw = env.get(name, "0")
            try:
                values[name] = int(raw)
            except ValueError:
                raise DistributedError(
                    f"environment variable {name}={raw!r} is not an integer"
                ) from None
        world = cls(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"], True)
        if world.size < 1 or not 0 <= world.rank < world.size or world.local_rank < 0:
            raise DistributedError(
                f"RANK={world.rank} and WORLD_SIZE={world.size} do not describe a rank of a job"
            )
        return world

    @classmethod
    def current(cls) -> World:
        """The initialised process group's world (a world of one when there is none)."""
        if not (dist.is_available() and dist.is_initialized()):
            return cls()
        local = int(os.environ.get("LOCAL_RANK", "0"))
        return cls(dist.get_rank(), dist.get_world_size(), local, True)


SINGLE_PROCESS = World()


def backend_for(device: str) -> str:
    """nccl between GPUs, gloo between CPU processes."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def rank_device(device: str, world: World) -> str:
    """Each rank drives the GPU of its local rank; ``--device cuda`` means "this node's GPUs"."""
    parsed = torch.device(device)
    if parsed.type != "cuda" or not world.distributed:
        return device
    if parsed.index is not None:
        raise DistributedError(
            f"--device {device}: under torchrun give --device cuda; each rank takes the GPU "
            "of its LOCAL_RANK"
        )
    return f"cuda:{world.local_rank}"


@contextmanager
def process_group(device: str, environ=None) -> Iterator[World]:
    """Join the job torchrun launched (when it did) for the block, and leave it after.

    Outside torchrun this yields a world of one and starts nothing.
    """
    world = World.from_environment(environ)
    if not world.distributed or dist.is_initialized():
        yield World.current() if dist.is_initialized() else world
        return
    backend = backend_for(device)
    if backend == "nccl":
        gpus = torch.cuda.device_count()
        if world.local_rank >= gpus:
            raise DistributedError(
                f"LOCAL_RANK={world.local_rank} but this node has {gpus} "
                "GPU(s); start at most one rank per GPU (--nproc-per-node)"
            )
        torch.cuda.set_device(world.local_rank)
    raw = os.environ.get("SIGMA_PYRO_DIST_TIMEOUT", str(_DEFAULT_TIMEOUT_S))
    try:
        timeout = timedelta(seconds=float(raw))
    except ValueError:
        raise DistributedError(
            f"SIGMA_PYRO_DIST_TIMEOUT={raw!r} is not a number of seconds"
        ) from None
    try:
        dist.init_process_group(backend, timeout=timeout)
    except (RuntimeError, ValueError) as err:
        raise DistributedError(
            f"cannot join the {backend} process group ({str(err).splitlines()[0]})"
        ) from None
    try:
        yield world
    finally:
        dist.destroy_process_group()


def all_sum(values: torch.Tensor, world: World) -> torch.Tensor:
    """The elementwise sum of ``values`` over all ranks (``values`` itself in a world of
    one). float64 on the CPU for gloo; moved to the rank's GPU for nccl."""
    if not world.distributed:
        return values
    device = torch.device("cuda", world.local_rank) if dist.get_backend() == "nccl" else "cpu"
    summed = values.detach().to(device=device, dtype=torch.float64).clone()
    dist.all_reduce(summed)
    return summed.to(values.device)


def all_gather(obj, world: World) -> list:
    """Every rank's ``obj`` in rank order (``[obj]`` in a world of one)."""
    if not world.distributed:
        return [obj]
    gathered: list = [None] * world.size
    dist.all_gather_object(gathered, obj)
    return gathered
