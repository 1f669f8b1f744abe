#!/usr/bin/env python
"""Does ``JitTrace_ELBO`` pay for SIGMA? Its best case, measured against ``Trace_ELBO``.

A traced ELBO is specialised to the shapes it was traced with, and training batches here
have a new shape almost every step (dynamic padding, and the likelihood runs over however
many real positions a batch has). So this script measures the most that tracing could
give: the same batch stepped again and again, where one trace is reused, against the same
steps with ``Trace_ELBO``; and it counts how many distinct batch shapes an epoch has, each
of which would cost a new trace. Run from the repository root:

    python scripts/jit_trial.py [--data ../shared/data/Beauty.txt] [--steps 30]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pyro
import torch
from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO

from sigma_pyro.api import SigmaRecommender
from sigma_pyro.bench.throughput import DEFAULT_DATA
from sigma_pyro.config import load_config
from sigma_pyro.data.batching import SequenceBatch, TrainingBatches


def tensor_program(program):
    """The model or guide with tensor arguments only, as ``torch.jit.trace`` needs. Guide
    and model of one particle get the same tensors, so they share one batch (and its
    hand-over of the interests)."""
    shared = {}

    def run(items, targets, mask, kl, lam):
        if shared.get("items") is not items:
            shared["items"] = items
            shared["batch"] = SequenceBatch(items, targets, mask, torch.arange(items.shape[0]))
        return program(shared["batch"], kl, lam)

    return run


def timed_steps(svi, args, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        svi.step(*args)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--preset", default="beauty")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    config = load_config(args.preset, {"data": {"path": str(args.data)}})
    rec = SigmaRecommender(config)
    rec.load_data()
    batches = TrainingBatches.for_training(rec.split.train, config)
    shapes = []
    for epoch in range(2):
        batches.set_epoch(epoch)
        shapes.append({(*b.items.shape, b.num_tokens) for b in batches})
    print(
        f"distinct (sequences, length, real positions) per epoch: "
        f"{len(shapes[0])} and {len(shapes[1])} of {len(batches)} batches; "
        f"shared by the two epochs: {len(shapes[0] & shapes[1])}"
    )

    batches.set_epoch(0)
    batch = max(batches, key=lambda b: b.num_tokens)  # the costliest step: the most to gain
    scales = (torch.tensor(1e-4), torch.tensor(0.1))
    step_args = (batch.items, batch.targets, batch.mask, *scales)
    results = {}
    for name, elbo in [
        ("Trace_ELBO", Trace_ELBO()),
        ("JitTrace_ELBO", JitTrace_ELBO(ignore_jit_warnings=True)),
        ("Trace_ELBO again", Trace_ELBO()),
    ]:
        pyro.clear_param_store()
        module = rec.build_module().train()
        svi = SVI(
            tensor_program(module.model),
            tensor_program(module.guide),
            pyro.optim.ClippedAdam({"lr": config.train.lr}),
            elbo,
        )
        with pyro.validation_enabled(False):
            started = time.perf_counter()
            svi.step(*step_args)  # traces, for the JIT
            first = time.perf_counter() - started
            times = timed_steps(svi, step_args, args.steps)
        results[name] = statistics.median(times)
        print(
            f"{name}: first step {first:.3f} s, then median {results[name]:.3f} s "
            f"over {args.steps} steps of one {tuple(batch.items.shape)} batch "
            f"({batch.num_tokens} real positions)"
        )
    plain = statistics.mean([results["Trace_ELBO"], results["Trace_ELBO again"]])
    print(f"JitTrace_ELBO / Trace_ELBO per step, best case: {results['JitTrace_ELBO'] / plain:.3f}")


if __name__ == "__main__":
    main()
