"""Several trainings side by side on one machine, one process each.

The models here are small enough that torch uses two CPU threads poorly: on the 2-core
development machine two one-thread trainings side by side got through Beauty epochs 1.17x
faster than one two-thread training after the other. Each worker gets an equal share of the
parent's torch threads. Workers are spawned (not forked) so that no torch thread pool or
lock is inherited mid-use.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ProcessPoolExecutor, as_completed

from sigma_pyro.errors import ConfigError, TrainingError


def check_jobs(jobs: int) -> None:
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")


def recorded_run(
    function: Callable[..., dict], args: tuple, tag: str, log: Callable[[str], None]
) -> dict:
    """``{"status": "ok", **function(*args, log)}``, or the failure of a diverging run as
    its status so that the rest of a grid goes on."""
    try:
        return {"status": "ok", **function(*args, lambda line: log(tag + line))}
    except TrainingError as err:
        log(tag + str(err))
        return {"status": f"failed: {err}"}


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# How often a worker checks that the process that started it is still alive.
PARENT_CHECK_SECONDS = 2.0
_watching_parent = False


def _exit_when_orphaned(parent: int) -> None:
    """Ends this worker once its parent is gone. A pool's workers outlive a parent killed by
    a signal it cannot clean up after (SIGTERM, SIGKILL); left running, a study's workers
    went on training their trials beside the study resumed in their place. Whatever they
    had finished is saved per epoch, so a retry resumes where they stopped."""
    while True:
        time.sleep(PARENT_CHECK_SECONDS)
        if os.getppid() != parent:
            os._exit(1)


def _in_worker(
    parent: int, threads: int, function: Callable[..., dict], args: tuple, tag: str
) -> dict:
    import torch

    from sigma_pyro.runtime.allocator import configure_process_memory

    global _watching_parent
    if not _watching_parent:  # once per worker, which may run many calls
        threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()
        _watching_parent = True
    configure_process_memory()  # a spawned process starts with glibc's defaults again
    torch.set_num_threads(threads)
    return recorded_run(function, args, tag, _stderr)


def run_all(
    calls: dict[Hashable, tuple[Callable[..., dict], tuple, str]],
    jobs: int,
    on_result: Callable[[Hashable, dict], None],
    log: Callable[[str], None],
    on_start: Callable[[Hashable], None] = lambda key: None,
) -> None:
    """Run each ``key: (function, args, tag)`` as :func:`recorded_run` and hand each result
    to ``on_result`` as soon as it is done: in this process one after the other with
    ``jobs == 1``, else in ``jobs`` worker processes (their logs go to stderr; ``function``
    must be importable by name)."""
    if jobs == 1:
        for key, (function, args, tag) in calls.items():
            on_start(key)
            on_result(key, recorded_run(function, args, tag, log))
        return
    import torch

    threads = max(1, torch.get_num_threads() // jobs)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = {
            pool.submit(_in_worker, os.getpid(), threads, function, args, tag): key
            for key, (function, args, tag) in calls.items()
        }
        for future in as_completed(futures):
            on_result(futures[future], future.result())
