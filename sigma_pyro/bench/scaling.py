"""How training and evaluation grow with the catalog: full vs sampled softmax at 10^4,
10^5 and 10^6 items. Each configuration runs in its own process so that its peak memory is
its own; a configuration whose estimated memory exceeds what the machine has is reported
as skipped rather than run into the OOM killer."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
import pyro
import torch
from pyro.infer import SVI, Trace_ELBO

from sigma_pyro.config import Config, EvalConfig, ModelConfig, TrainConfig
from sigma_pyro.data.batching import TrainingBatches
from sigma_pyro.evaluation.evaluate import evaluate_module
from sigma_pyro.nn.module import SigmaModule
from sigma_pyro.runtime.allocator import configure_process_memory
from sigma_pyro.runtime.resources import available_memory, estimate_training_memory, peak_rss_mb

USERS, MEAN_LENGTH, MAX_LENGTH = 2000, 9, 50


def _sequences(num_items: int, seed: int = 0) -> list[np.ndarray]:
    # Zipf-like popularity, so the sampled softmax's popularity sampler has work to do.
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 2 * MEAN_LENGTH - 4, size=USERS)
    ranks = rng.zipf(1.2, size=int(lengths.sum())) % num_items
    items = rng.permutation(num_items)[ranks] + 1
    return np.split(items.astype(np.int64), np.cumsum(lengths)[:-1])


def _model_config(likelihood: str, negatives: int, hidden_size: int) -> ModelConfig:
    return ModelConfig(
        hidden_size=hidden_size,
        num_heads=4,
        max_seq_length=MAX_LENGTH,
        likelihood=likelihood,
        negatives=negatives,
    )


def measure_one(
    num_items: int, likelihood: str, negatives: int, batch_size: int, hidden_size: int, steps: int
) -> dict:
    """Seconds per SVI step (extrapolated to an epoch), full-ranking evaluation seconds
    for all users, and peak resident memory, for one catalog size and likelihood."""
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    sequences = _sequences(num_items)
    config = _model_config(likelihood, negatives, hidden_size)
    module = SigmaModule(num_items, config)
    counts = torch.bincount(torch.as_tensor(np.concatenate(sequences)), minlength=num_items + 1)
    module.set_sampling_counts(counts[1:].float())
    train = [s[:-2] for s in sequences]
    batches = TrainingBatches(train, batch_size, MAX_LENGTH, seed=0)
    svi = SVI(module.model, module.guide, pyro.optim.ClippedAdam({"lr": 1e-3}), Trace_ELBO())
    iterator = iter(batches)
    with pyro.validation_enabled(False):
        svi.step(next(iterator), 1e-3, 0.1)  # warm-up
        started = time.perf_counter()
        done = 0
        for batch in iterator:
            svi.step(batch, 1e-3, 0.1)
            done += 1
            if done == steps:
                break
        step_seconds = (time.perf_counter() - started) / done
    module.eval()
    started = time.perf_counter()
    evaluate_module(
        module,
        [s[:-1] for s in sequences],
        np.array([s[-1] for s in sequences]),
        EvalConfig(),
    )
    eval_seconds = time.perf_counter() - started
    return {
        "items": num_items,
        "likelihood": likelihood,
        "status": "ok",
        "step_seconds": round(step_seconds, 4),
        "epoch_seconds_estimate": round(step_seconds * len(batches), 2),
        "steps_per_epoch": len(batches),
        "eval_seconds": round(eval_seconds, 2),
        "eval_users": USERS,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def estimated_peak_mb(
    num_items: int, likelihood: str, negatives: int, batch_size: int, hidden_size: int
) -> float:
    """The training memory check's estimate (sigma_pyro.runtime.resources) for this
    configuration."""
    config = Config(
        model=_model_config(likelihood, negatives, hidden_size),
        train=TrainConfig(batch_size=batch_size),
    )
    # The training sequences drop the last two items; the inputs drop one more.
    lengths = [len(s) - 3 for s in _sequences(num_items)]
    return estimate_training_memory(config, num_items, lengths).total / 2**20


def available_mb() -> float:
    """What the training memory check sees as available on the CPU (inf when unknown)."""
    available = available_memory("cpu")
    return float("inf") if available is None else available[0] / 2**20


def run_scaling(
    sizes=(10**4, 10**5, 10**6),
    negatives: int = 1000,
    batch_size: int = 128,
    hidden_size: int = 64,
    steps: int = 5,
    log=print,
) -> list[dict]:
    rows = []
    for num_items in sizes:
        for likelihood in ("full", "sampled"):
            estimate = estimated_peak_mb(num_items, likelihood, negatives, batch_size, hidden_size)
            if estimate > 0.8 * available_mb():
                row = {
                    "items": num_items,
                    "likelihood": likelihood,
                    "status": "skipped",
                    "reason": f"estimated {estimate / 1024:.1f} GB exceeds 80% of the "
                    f"{available_mb() / 1024:.1f} GB available",
                }
            else:
                command = [
                    sys.executable,
                    "-m",
                    "sigma_pyro.bench.scaling",
                    "--items",
                    str(num_items),
                    "--likelihood",
                    likelihood,
                    "--negatives",
                    str(negatives),
                    "--batch-size",
                    str(batch_size),
                    "--hidden-size",
                    str(hidden_size),
                    "--steps",
                    str(steps),
                ]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode == 0:
                    row = json.loads(done.stdout.strip().splitlines()[-1])
                else:
                    row = {
                        "items": num_items,
                        "likelihood": likelihood,
                        "status": "failed",
                        "reason": (done.stderr.strip().splitlines() or ["killed"])[-1][:200],
                    }
            row["estimated_peak_mb"] = round(estimate)
            log(json.dumps(row))
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="one scaling measurement (used by bench)")
    parser.add_argument("--items", type=int, required=True)
    parser.add_argument("--likelihood", choices=("full", "sampled"), required=True)
    parser.add_argument("--negatives", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    configure_process_memory()  # as the command line does for every command
    print(
        json.dumps(
            measure_one(
                args.items,
                args.likelihood,
                args.negatives,
                args.batch_size,
                args.hidden_size,
                args.steps,
            )
        )
    )


if __name__ == "__main__":
    main()
