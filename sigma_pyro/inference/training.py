"""The training plan: SVI with Trace_ELBO, KL annealing, early stopping and resumption."""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyro
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from sigma_pyro.config import Config, early_stop_cutoff
from sigma_pyro.data.batching import TrainingBatches
from sigma_pyro.data.dataset import LeaveOneOutSplit
from sigma_pyro.errors import TrainingError
from sigma_pyro.evaluation.evaluate import evaluate_module
from sigma_pyro.inference.elbo_loss import ElboLoss, data_parallel
from sigma_pyro.inference.guarded_step import guarded_step, refuse_bad_step
from sigma_pyro.inference.objective import elbo_terms
from sigma_pyro.inference.precision import autocast_program
from sigma_pyro.inference.schedules import (
    assignment_temperature,
    interest_scale,
    kl_scale,
    rank_seed,
)
from sigma_pyro.inference.training_state import (
    Progress,
    read_state,
    restore_state,
    write_state,
)
from sigma_pyro.runtime.checkpoint import STATE_FILE
from sigma_pyro.runtime.distributed import World
from sigma_pyro.runtime.progress import progress_bar
from sigma_pyro.runtime.resources import peak_rss_mb


@dataclass
class EpochRecord:
    epoch: int
    step: int
    loss: float  # mean annealed negative ELBO per real position
    terms: dict[str, float]  # ELBO terms on a fixed monitoring batch
    valid: dict[str, float]
    kl_scale: float
    interest_scale: float
    seconds: float
    interest_valid: dict[str, float] = field(default_factory=dict)  # the interest head alone
    peak_rss_mb: float = math.nan  # the process's peak resident memory so far


@dataclass
class TrainingSummary:
    best_epoch: int
    best_valid: dict[str, float]
    epochs_run: int
    stopped_early: bool
    history: list[EpochRecord] = field(default_factory=list)


class Trainer:
    """Trains a :class:`~sigma_pyro.nn.module.SigmaModule` on a leave-one-out split.

    ``on_improvement(module, epoch, valid)`` is called whenever validation improves, so the
    caller decides how to save the best model; ``on_epoch(record)`` after every epoch (an
    exception it raises ends training, as a pruned tuning trial does); the resumable state
    goes to ``state_dir/last.pt`` after every epoch.

    Under torch.distributed (``world``, by default the initialised process group's) every
    rank runs this with the same arguments: each trains on its share of every global batch
    under DistributedDataParallel, validation is sharded and gathered, and only rank 0 logs
    and writes ``last.pt``. Both callbacks run on every rank, with the same arguments.
    """

    def __init__(
        self,
        module,
        split: LeaveOneOutSplit,
        config: Config,
        state_dir: Path | None = None,
        on_improvement: Callable | None = None,
        log: Callable[[str], None] | None = None,
        on_epoch: Callable[[EpochRecord], None] | None = None,
        world: World | None = None,
    ):
        self.world = World.current() if world is None else world
        self.module = module
        self.split = split
        self.config = config
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.on_improvement = on_improvement
        self.on_epoch = on_epoch
        say = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.log = say if self.world.is_main else (lambda line: None)
        self.device = torch.device(config.train.device)

    def fit(self, resume: bool = False) -> TrainingSummary:
        """Train until early stopping or the epoch limit. The caller's Pyro parameter store
        and global torch RNG are left as they were: training runs in its own scope with its
        own seed (rank 0 the configured one, every other rank its own stream)."""
        device = self.device
        with (
            pyro.get_param_store().scope(),
            torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
        ):
            torch.manual_seed(rank_seed(self.config.train.seed, self.world.rank))
            return self._fit(resume)

    def _fit(self, resume: bool) -> TrainingSummary:
        cfg, world = self.config, self.world
        module = self.module.to(self.device)
        t = cfg.train
        optimizer = pyro.optim.ClippedAdam(
            {"lr": t.lr, "clip_norm": t.clip_norm, "weight_decay": t.weight_decay}
        )
        batches = TrainingBatches.for_training(self.split.train, cfg)
        if len(batches) == 0:
            raise TrainingError("no user has a training sequence of 2 or more items")
        size = min(cfg.train.batch_size, 256)
        monitor = TrainingBatches(self.split.train, size, cfg.model.max_seq_length, shuffle=False)
        monitor = next(iter(monitor)).to(self.device)
        progress = Progress()
        if resume:
            self._restore(optimizer, progress)
        # Registered once up front so that every rank hands the optimiser the same
        # parameters, including a rank whose share of a batch was empty.
        pyro.module("sigma", module)
        loss = data_parallel(self._elbo_loss(), world, self.device, monitor)
        metric = cfg.train.early_stop_metric
        cutoff = early_stop_cutoff(metric)
        eval_config = dataclasses.replace(
            cfg.eval, ks=sorted(set(cfg.eval.ks) | ({cutoff} if cutoff else set()))
        )
        history: list[EpochRecord] = []
        while progress.epoch < cfg.train.epochs:
            if progress.bad_epochs >= cfg.train.patience > 0:
                break
            record = self._epoch(loss, optimizer, batches, monitor, eval_config, progress)
            history.append(record)
            if self.on_epoch is not None:
                self.on_epoch(record)
            improved = record.valid[metric] > progress.best
            if improved:
                progress.improved(record.epoch, record.valid, metric)
                if self.on_improvement is not None:
                    self.on_improvement(module, record.epoch, record.valid)
            else:
                progress.bad_epochs += 1
            self.log(self._format(record, metric, improved))
            self._save(optimizer, progress)
        stopped_early = progress.bad_epochs >= cfg.train.patience > 0
        return TrainingSummary(
            progress.best_epoch, progress.best_valid, progress.epoch, stopped_early, history
        )

    def _elbo_loss(self) -> ElboLoss:
        cfg, module = self.config.train, self.module
        amp = cfg.mixed_precision
        elbo = (TraceMeanField_ELBO if cfg.analytic_kl else Trace_ELBO)(
            num_particles=cfg.num_particles
        )
        return ElboLoss(
            module,
            autocast_program(module.model, self.device, amp),
            autocast_program(module.guide, self.device, amp),
            elbo,
        )

    def _epoch(
        self, loss, optimizer, batches: TrainingBatches, monitor, eval_config, progress: Progress
    ) -> EpochRecord:
        """One pass over the training batches, then the monitoring terms and validation."""
        started = time.perf_counter()
        lam = interest_scale(self.config, progress.epoch)
        if self.config.model.assignment_anneal_epochs and self.module.interests is not None:
            tau = assignment_temperature(self.config, progress.epoch)
            self.module.interests.anneal_temperature(tau)
        mean_loss = self._train_pass(loss, optimizer, batches, progress, lam)
        self.module.eval()
        beta = kl_scale(self.config, progress.step)
        # Only rank 0 reports the terms, so only it pays for them.
        terms = elbo_terms(self.module, monitor, beta, lam) if self.world.is_main else {}
        valid, interest_valid = self._validate(eval_config)
        progress.epoch += 1
        seconds = time.perf_counter() - started
        return EpochRecord(
            progress.epoch, progress.step, mean_loss, terms, valid, beta, lam, seconds,
            interest_valid, peak_rss_mb(),
        )  # fmt: skip

    def _train_pass(self, loss, optimizer, batches, progress: Progress, lam: float) -> float:
        """The epoch's gradient steps; returns the mean annealed loss per real position.

        Every rank walks the same global batches (the shuffle is seeded by seed and epoch)
        and trains on its share of each, so the step count, the KL ramp and the interest
        weight are global; the loss reported is the global batch's.
        """
        cfg, module, world = self.config, self.module, self.world
        module.train()
        batches.set_epoch(progress.epoch)
        total_loss, total_tokens = 0.0, 0
        bar = progress_bar(
            batches,
            cfg.train.progress and world.is_main,
            desc=f"epoch {progress.epoch + 1}",
            leave=False,
        )
        for batch in bar:
            shard = batch.shard(world.rank, world.size)
            shard = None if shard is None else shard.to(self.device)
            beta = kl_scale(cfg, progress.step)
            batch_loss, bad = guarded_step(loss, optimizer, module, shard, beta, lam, world)
            where = f"epoch {progress.epoch + 1}, step {progress.step + 1}"
            refuse_bad_step(module, batch, self.device, beta, lam, batch_loss, bad, where)
            progress.step += 1
            total_loss += batch_loss
            total_tokens += batch.num_targets
            bar.set_postfix(loss=f"{total_loss / total_tokens:.4f}")
        return total_loss / total_tokens

    def _validate(self, eval_config) -> tuple[dict, dict]:
        """Validation metrics of the next-item head and, with interests, the interest head
        alone; sharded over the ranks."""
        module, split = self.module, self.split
        data = (module, split.valid_history, split.valid_target)
        valid = evaluate_module(*data, eval_config, self.device, world=self.world)
        if module.interests is None:
            return valid, {}
        alone = dataclasses.replace(eval_config, ks=[20], posterior_samples=0)
        return valid, evaluate_module(*data, alone, self.device, head="interests", world=self.world)

    def _restore(self, optimizer, progress: Progress) -> None:
        """Continue from ``state_dir/last.pt`` when there is one."""
        path = None if self.state_dir is None else self.state_dir / STATE_FILE
        if path is None or not path.is_file():
            self.log("no training state to resume from; starting fresh")
            return
        state = read_state(path, self.config, self.device)
        saved_size = restore_state(
            state, path, self.module, optimizer, progress, self.world, self.device
        )
        self.log(
            f"resumed from {path} at epoch {progress.epoch}"
            + (f" (written by {saved_size} processes)" if saved_size != self.world.size else "")
        )

    def _save(self, optimizer, progress: Progress) -> None:
        if self.state_dir is not None:
            write_state(
                self.state_dir / STATE_FILE,
                self.config,
                self.module,
                optimizer,
                progress,
                self.world,
                self.device,
            )

    @staticmethod
    def _format(r: EpochRecord, metric: str, improved: bool) -> str:
        terms = " ".join(f"{k}={v:.4f}" for k, v in r.terms.items())
        return (
            f"epoch {r.epoch:3d} step {r.step:6d} loss/token={r.loss:.4f} [{terms}] "
            f"beta={r.kl_scale:.2e} lambda={r.interest_scale:.4f} "
            f"valid {metric}={r.valid[metric]:.4f} "
            f"recall@20={r.valid.get('recall@20', float('nan')):.4f} "
            + (
                f"interest-head ndcg@20={r.interest_valid['ndcg@20']:.4f} "
                if r.interest_valid
                else ""
            )
            + f"{r.seconds:.1f}s{' *' if improved else ''}"
        )
