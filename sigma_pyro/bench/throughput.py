"""Speed and memory benchmark: SVI epoch time, full-ranking evaluation time, peak memory,
FLOPs, and the cost of the Pyro layer against the same objective in plain PyTorch."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim.clipped_adam import ClippedAdam
from torch.utils.flop_counter import FlopCounterMode

from sigma_pyro.api import SigmaRecommender
from sigma_pyro.config import Config
from sigma_pyro.data.batching import TrainingBatches
from sigma_pyro.data.synthetic import SyntheticConfig, generate_synthetic
from sigma_pyro.inference.plain_elbo import plain_negative_elbo
from sigma_pyro.inference.precision import autocast_program
from sigma_pyro.inference.schedules import interest_scale, kl_scale
from sigma_pyro.runtime.resources import peak_rss_mb

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "Beauty.txt"
# Beauty's shape, for machines without the file: users, items, and lengths averaging ~8.9.
BEAUTY_SHAPE = SyntheticConfig(
    num_users=22363, num_items=12101, num_categories=40, min_length=5, max_length=13, seed=0
)


def _epoch(step_fn, batches, epoch: int, device) -> float:
    batches.set_epoch(epoch)
    started = time.perf_counter()
    for batch in batches:
        step_fn(batch.to(device))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def _flops_per_epoch(module, batches, config: Config, device, sample_batches: int = 3) -> float:
    """FLOPs of forward + backward of the objective, counted on a few batches and scaled
    to the epoch by the number of real positions."""
    counted, tokens = 0, 0
    total_tokens = sum(len(s) - 1 for s in batches.sequences if len(s) >= 2)
    batches.set_epoch(0)
    for index, batch in enumerate(batches):
        if index == sample_batches:
            break
        batch = batch.to(device)
        with FlopCounterMode(display=False) as counter:
            plain_negative_elbo(module, batch, 1e-3, 0.1).backward()
        module.zero_grad(set_to_none=True)
        counted += counter.get_total_flops()
        tokens += batch.num_tokens
    return counted * total_tokens / max(tokens, 1)


@dataclass
class _Measurements:
    pyro_times: list[float]
    plain_times: list[float]
    amp_times: list[float] | None
    eval_seconds: float
    eval_users: int
    # The process's peak after each phase: later phases can only raise it, so this shows
    # which one did.
    peaks: dict[str, float]
    flops: float


def run_benchmark(config: Config, epochs: int = 3, log=print) -> dict:
    """Train ``epochs`` measured epochs (after one warm-up) with Pyro SVI and with the plain
    PyTorch objective on the same batches, then evaluate every user once."""
    device = torch.device(config.train.device)
    rec, source = _load_data(config, log)
    module = rec.build_module().to(device).train()
    batches = TrainingBatches.for_training(rec.split.train, config)
    measured = _measure(rec, module, batches, config, device, epochs, log)
    return _result(config, rec.dataset, source, device, batches, measured)


def _load_data(config: Config, log) -> tuple[SigmaRecommender, str]:
    rec = SigmaRecommender(config)
    if config.data.path is None:
        interactions = generate_synthetic(BEAUTY_SHAPE).interactions
        rec.load_data(interactions)
        source = "synthetic data of Beauty's shape"
    else:
        rec.load_data()
        source = config.data.path
    dataset = rec.dataset
    log(f"benchmark data: {source}: {dataset.num_users} users, {dataset.num_items} items")
    return rec, source


def _measure(rec, module, batches, config: Config, device, epochs: int, log) -> _Measurements:
    beta, lam = kl_scale(config, 0), interest_scale(config, 0)
    pyro.clear_param_store()
    svi_optimizer = pyro.optim.ClippedAdam(
        {"lr": config.train.lr, "clip_norm": config.train.clip_norm}
    )
    peaks = {}
    pyro_times = _svi_epochs(module, svi_optimizer, batches, device, beta, lam, epochs, False, log)
    peaks["svi"] = peak_rss_mb()
    # Measured in the same run as the float32 epochs, so their ratio is not assembled.
    amp_times = None
    if config.train.mixed_precision:
        amp_times = _svi_epochs(
            module, svi_optimizer, batches, device, beta, lam, epochs, True, log
        )
        peaks["svi_mixed_precision"] = peak_rss_mb()

    plain_times = _plain_epochs(module, batches, config, device, beta, lam, epochs, log)
    peaks["plain"] = peak_rss_mb()

    module.eval()
    started = time.perf_counter()
    test = rec.evaluate("test")
    eval_seconds = time.perf_counter() - started
    peaks["evaluation"] = peak_rss_mb()
    flops = _flops_per_epoch(module.train(), batches, config, device)
    return _Measurements(
        pyro_times, plain_times, amp_times, eval_seconds, test["num_users"], peaks, flops
    )


def _svi_epochs(
    module, optimizer, batches, device, beta, lam, epochs: int, amp: bool, log
) -> list[float]:
    svi = SVI(
        autocast_program(module.model, device, amp),
        autocast_program(module.guide, device, amp),
        optimizer,
        Trace_ELBO(),
    )
    with pyro.validation_enabled(False):  # as in the Trainer's hot loop
        times = [
            _epoch(lambda b: svi.step(b, beta, lam), batches, e, device) for e in range(epochs + 1)
        ][1:]
    log(f"pyro SVI epochs{' (mixed precision)' if amp else ''}: {[round(t, 2) for t in times]} s")
    return times


def _plain_epochs(
    module, batches, config: Config, device, beta, lam, epochs: int, log
) -> list[float]:
    optimizer = ClippedAdam(
        module.parameters(), lr=config.train.lr, clip_norm=config.train.clip_norm
    )

    def plain_step(batch):
        optimizer.zero_grad(set_to_none=True)
        plain_negative_elbo(module, batch, beta, lam).backward()
        optimizer.step()

    times = [_epoch(plain_step, batches, e, device) for e in range(epochs + 1)][1:]
    log(f"plain PyTorch epochs: {[round(t, 2) for t in times]} s")
    return times


def _result(config: Config, dataset, source: str, device, batches, m: _Measurements) -> dict:
    epoch_seconds = statistics.median(m.pyro_times)
    plain_seconds = statistics.median(m.plain_times)
    mixed = {}
    if m.amp_times:
        amp_seconds = statistics.median(m.amp_times)
        mixed = {
            "mixed_precision_epoch_seconds": round(amp_seconds, 3),
            "mixed_precision_epoch_seconds_all": [round(t, 3) for t in m.amp_times],
            "float32_over_mixed_precision_ratio": round(epoch_seconds / amp_seconds, 3),
        }
    return {
        "data": source,
        "users": dataset.num_users,
        "items": dataset.num_items,
        "prior": config.model.prior,
        "likelihood": config.model.likelihood,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "mixed_precision": config.train.mixed_precision,
        "epoch_seconds": round(epoch_seconds, 3),
        "epoch_seconds_all": [round(t, 3) for t in m.pyro_times],
        "plain_epoch_seconds": round(plain_seconds, 3),
        "pyro_over_plain_ratio": round(epoch_seconds / plain_seconds, 3),
        "sequences_per_second": round(len(batches.rows) / epoch_seconds, 1),
        "eval_seconds": round(m.eval_seconds, 3),
        "eval_users": m.eval_users,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "peak_rss_mb_after": {phase: round(mb, 1) for phase, mb in m.peaks.items()},
        "flops_per_epoch": int(m.flops),
        "achieved_gflops_per_second": round(m.flops / 1e9 / epoch_seconds, 3),
        "steps_per_epoch": len(batches),
        **mixed,
    }
