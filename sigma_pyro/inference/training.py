"""The training plan: SVI with Trace_ELBO, KL annealing, early stopping and resumption."""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyro
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.util import zero_grads

from sigma_pyro.config import Config, early_stop_cutoff, flag
from sigma_pyro.data.batching import TrainingBatches
from sigma_pyro.data.dataset import LeaveOneOutSplit
from sigma_pyro.errors import CheckpointError, SigmaPyroError
from sigma_pyro.evaluation.evaluate import evaluate_module
from sigma_pyro.inference.elbo_loss import ElboLoss, data_parallel
from sigma_pyro.inference.objective import elbo_terms, first_non_finite_site
from sigma_pyro.inference.precision import autocast_program
from sigma_pyro.runtime.checkpoint import (
    FORMAT_VERSION,
    STATE_FILE,
    atomic_torch_save,
    library_versions,
    safe_torch_load,
)
from sigma_pyro.runtime.distributed import World, all_gather, all_sum
from sigma_pyro.runtime.progress import progress_bar
from sigma_pyro.runtime.resources import peak_rss_mb


class TrainingError(SigmaPyroError):
    """Training cannot continue (for example a non-finite ELBO)."""


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


def kl_scale(config: Config, step: int) -> float:
    """Scale of the z site: beta_t, ramping linearly up to ``kl_cap``.

    The scale multiplies the KL of z summed over its dimensions at each real position, so
    ``kl_cap`` is in ELBO units: a cap of 1 is the true ELBO, and a cap of 0.05 weighs a
    nat of KL per token at 1/20 of a nat of next-item likelihood. (Until 0.2 this was
    divided by the latent size, which left the prior a weight of ~0.0016 a token: no say.)
    The ramp starts at one step's worth, since poutine.scale needs a positive scale.
    """
    t = config.train
    ramp = 1.0 if t.kl_anneal_steps == 0 else min(1.0, (step + 1) / t.kl_anneal_steps)
    return t.kl_cap * ramp


def rank_seed(seed: int, rank: int) -> int:
    """Rank 0 keeps the configured seed (a one-process run is rank 0 of a world of one);
    every other rank draws its own dropout and z noise."""
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def interest_scale(config: Config, epoch: int) -> float:
    """The MIE weight of the authors' code: starts high to shape the interests, then decays
    linearly to a floor (max(1, 200 - epoch) * 1e-3 with the default settings)."""
    t = config.train
    return max(t.interest_weight_end, t.interest_weight_start - t.interest_weight_decay * epoch)


@dataclass
class _Progress:
    """Where training stands; saved with the resumable state."""

    epoch: int = 0
    step: int = 0
    best: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    best_valid: dict[str, float] = field(default_factory=dict)

    def improved(self, record: EpochRecord, metric: str) -> None:
        self.best, self.best_epoch, self.best_valid = (
            record.valid[metric],
            record.epoch,
            record.valid,
        )
        self.bad_epochs = 0


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
        optimizer = pyro.optim.ClippedAdam({"lr": cfg.train.lr, "clip_norm": cfg.train.clip_norm})
        batches = TrainingBatches.for_training(self.split.train, cfg)
        if len(batches) == 0:
            raise TrainingError("no user has a training sequence of 2 or more items")
        monitor = next(
            iter(
                TrainingBatches(
                    self.split.train,
                    min(cfg.train.batch_size, 256),
                    cfg.model.max_seq_length,
                    shuffle=False,
                )
            )
        )
        monitor = monitor.to(self.device)
        progress = _Progress()
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
                progress.improved(record, metric)
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
        self, loss, optimizer, batches: TrainingBatches, monitor, eval_config, progress: _Progress
    ) -> EpochRecord:
        """One pass over the training batches, then the monitoring terms and validation.

        Every rank walks the same global batches (the shuffle is seeded by seed and epoch)
        and trains on its share of each, so the step count, the KL ramp and the interest
        weight are global; the loss reported is the global batch's.
        """
        cfg, module, world = self.config, self.module, self.world
        started = time.perf_counter()
        module.train()
        batches.set_epoch(progress.epoch)
        lam = interest_scale(cfg, progress.epoch)
        total_loss, total_tokens = 0.0, 0
        bar = progress_bar(
            batches,
            cfg.train.progress and world.is_main,
            desc=f"epoch {progress.epoch + 1}",
            leave=False,
        )
        for batch in bar:
            shard = batch.shard(world.rank, world.size)
            beta = kl_scale(cfg, progress.step)
            batch_loss, bad_gradients = self._step(
                loss, optimizer, None if shard is None else shard.to(self.device), beta, lam
            )
            where = f"epoch {progress.epoch + 1}, step {progress.step + 1}"
            if not math.isfinite(batch_loss):
                site = first_non_finite_site(module, batch.to(self.device), beta, lam)
                raise TrainingError(
                    f"non-finite ELBO at {where}{f' ({site})' if site else ''}; "
                    "the last good checkpoint is kept"
                )
            if bad_gradients:
                raise TrainingError(
                    f"non-finite gradient at {where} in {len(bad_gradients)} parameters "
                    f"({', '.join(bad_gradients[:3])}{', ...' if len(bad_gradients) > 3 else ''}"
                    "); not applied, the last good checkpoint is kept"
                )
            progress.step += 1
            total_loss += batch_loss
            total_tokens += batch.num_tokens
            bar.set_postfix(loss=f"{total_loss / total_tokens:.4f}")
        module.eval()
        beta = kl_scale(cfg, progress.step)
        # Only rank 0 reports the terms, so only it pays for them.
        terms = elbo_terms(module, monitor, beta, lam) if world.is_main else {}
        split = self.split
        valid = evaluate_module(
            module, split.valid_history, split.valid_target, eval_config, self.device, world=world
        )
        interest_valid = (
            {}
            if module.interests is None
            else evaluate_module(
                module,
                split.valid_history,
                split.valid_target,
                dataclasses.replace(eval_config, ks=[20], posterior_samples=0),
                self.device,
                head="interests",
                world=world,
            )
        )
        progress.epoch += 1
        return EpochRecord(
            progress.epoch,
            progress.step,
            total_loss / total_tokens,
            terms,
            valid,
            beta,
            lam,
            time.perf_counter() - started,
            interest_valid,
            peak_rss_mb(),
        )

    def _restore(self, optimizer, progress: _Progress) -> None:
        """Continue from ``state_dir/last.pt`` when there is one.

        A checkpoint of N ranks resumes bit for bit in N ranks (each takes back its own
        RNG stream) and statistically in one process (rank 0's stream); any other world
        size is refused, since the ranks' streams cannot be handed out again.
        """
        state = self._load_state()
        if state is None:
            return
        saved_size, world = state.get("world_size", 1), self.world
        if world.distributed and saved_size != world.size:
            raise CheckpointError(
                f"{self.state_dir / STATE_FILE}: written by {saved_size} process(es), resumed "
                f"with {world.size}; resume with {saved_size} or with one"
            )
        rngs = state.get("rank_rng") or [state["rng"]]
        cuda_rngs = state.get("rank_cuda_rng") or [state["cuda_rng"]]
        try:
            self.module.load_state_dict(state["module"])
            optimizer.set_state(state["optimizer"])
            # map_location moved every tensor to the device; RNG states live on the CPU.
            torch.set_rng_state(rngs[world.rank].cpu())
            if cuda_rngs[world.rank] is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(cuda_rngs[world.rank].cpu(), self.device)
            progress.epoch, progress.step = state["epoch"], state["step"]
            progress.best, progress.best_epoch = state["best"], state["best_epoch"]
            progress.bad_epochs, progress.best_valid = state["bad_epochs"], state["best_valid"]
        except (KeyError, RuntimeError, TypeError, AttributeError) as err:
            raise CheckpointError(
                f"{self.state_dir / STATE_FILE}: cannot resume from it ({str(err).splitlines()[0]})"
            ) from None
        self.log(
            f"resumed from {self.state_dir / STATE_FILE} at epoch {progress.epoch}"
            + (f" (written by {saved_size} processes)" if saved_size != world.size else "")
        )

    def _save(self, optimizer, progress: _Progress) -> None:
        """The resumable state after an epoch: weights, optimiser, every rank's RNG and the
        progress, written by rank 0 alone."""
        if self.state_dir is None:
            return
        cuda = self.device.type == "cuda"
        # Every rank takes part in the gather; only rank 0 writes.
        rngs = all_gather(torch.get_rng_state(), self.world)
        cuda_rngs = all_gather(torch.cuda.get_rng_state(self.device) if cuda else None, self.world)
        if not self.world.is_main:
            return
        atomic_torch_save(
            {
                "format_version": FORMAT_VERSION,
                "versions": library_versions(),
                "config": self.config.to_dict(),
                "module": self.module.state_dict(),
                "optimizer": optimizer.get_state(),
                "rng": rngs[0],
                "cuda_rng": cuda_rngs[0],
                "world_size": self.world.size,
                "rank_rng": rngs,
                "rank_cuda_rng": cuda_rngs,
                "epoch": progress.epoch,
                "step": progress.step,
                "best": progress.best,
                "best_epoch": progress.best_epoch,
                "bad_epochs": progress.bad_epochs,
                "best_valid": progress.best_valid,
            },
            self.state_dir / STATE_FILE,
        )

    def _step(self, loss, optimizer, shard, beta: float, lam: float) -> tuple[float, list[str]]:
        """One gradient step on this rank's ``shard`` that refuses to apply a non-finite
        loss or gradient: the parameters stay as they were, so the error can name the site
        on the healthy model and nothing poisoned is ever saved. Returns the global batch's
        loss and the parameters with bad gradients; every rank returns the same.

        Each rank's loss is weighted by the world size because DDP averages gradients over
        ranks while the ELBO sums over sequences: the update is the global batch's.
        """
        world = self.world
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
        params = list(self.module.parameters())
        bad: list[str] = []
        if math.isfinite(total):
            local.backward()
            norms = [p.grad.norm() for p in params if p.grad is not None]
            if norms and not torch.isfinite(torch.stack(norms)).all():
                bad = [
                    name
                    for name, p in self.module.named_parameters()
                    if p.grad is not None and not torch.isfinite(p.grad).all()
                ]
            else:
                optimizer(params)
        zero_grads(params)
        return total, bad

    def _load_state(self):
        if self.state_dir is None or not (self.state_dir / STATE_FILE).is_file():
            self.log("no training state to resume from; starting fresh")
            return None
        path = self.state_dir / STATE_FILE
        state = safe_torch_load(path, map_location=self.device)
        version = state.get("format_version") if isinstance(state, dict) else None
        if version != FORMAT_VERSION:
            raise CheckpointError(
                f"{path}: format version {version!r}, expected "
                f"{FORMAT_VERSION}; train again without --resume"
            )
        saved, current = state.get("config", {}).get("model", {}), self.config.to_dict()["model"]
        changed = sorted(
            flag(name) for name in saved.keys() & current.keys() if saved[name] != current[name]
        )
        if changed:
            raise CheckpointError(
                f"{path}: written with other model settings "
                f"({', '.join(changed)}); resume with the same ones"
            )
        return state

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
