"""The Optuna study behind ``sigma-pyro tune``: its storage (with a heartbeat, so that the
trial of a dead process is retried), sampler and pruner, and the objective, which trains a
trial and reports its validation criterion after every epoch."""

from __future__ import annotations

import math
import shutil
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from filelock import FileLock
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from sigma_pyro.config import field_types, load_config, nest_overrides
from sigma_pyro.errors import CheckpointError, ConfigError, TrainingError
from sigma_pyro.experiments.metrics import METRICS
from sigma_pyro.experiments.tuning_report import FINISHED, REPORT, write_reports
from sigma_pyro.inference.training import EpochRecord
from sigma_pyro.runtime.checkpoint import STATE_FILE, safe_torch_load
from sigma_pyro.runtime.run_log import HISTORY_FILE, TrainingHistory

SAMPLERS = ("tpe", "random", "grid")
# Early epochs rank trials poorly while the KL ramp and the interest weight still move: no
# pruning until five trials have finished, nor before a trial's fifth epoch.
PRUNERS = {
    "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=5),
    "none": optuna.pruners.NopPruner,
}
# A thread beats for each running trial, so a long epoch does not look dead; a trial whose
# beat is older than GRACE_SECONDS is taken for the trial of a dead process.
HEARTBEAT_SECONDS, GRACE_SECONDS = 60, 180
# A trial that keeps killing its process (out of memory) is given up after this many
# retries in a row that trained no new epoch.
MAX_RETRIES = 2
FAILURES_IN_A_ROW = 3
TRIALS_DIR = "trials"  # under --out: the training state of each running trial
# What counts towards the trials asked for: failed trials are retried, not counted.
CLAIMED = (*FINISHED, TrialState.RUNNING)


@dataclass(frozen=True)
class TuningPlan:
    """Everything a worker process needs to run trials of the study."""

    out: Path
    space_sources: tuple[str, ...]
    space: dict[str, BaseDistribution]
    trials: int
    preset: str | None
    overrides: dict
    storage: str
    study_name: str
    sampler: str
    pruner: str
    seed: int
    timeout: float | None
    criterion: str
    command: str
    revision: str


def make_sampler(name: str, space: dict[str, BaseDistribution], seed: int | None):
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name != "grid":
        raise ConfigError(f"--sampler {name!r} is unknown (choose from {', '.join(SAMPLERS)})")
    ranges = [n for n, d in space.items() if not isinstance(d, CategoricalDistribution)]
    if ranges:
        raise ConfigError(
            f"--sampler grid: {ranges[0]} is a range; a grid takes categorical settings only"
        )
    return optuna.samplers.GridSampler({n: list(d.choices) for n, d in space.items()}, seed=seed)


class RetryOnce:
    """Queue a copy of a failed trial (same parameters, ``retry_history`` extended, and
    ``failed_trial`` the first of the chain, as Optuna's RetryHeartbeatStaleTrialCallback
    writes them) so that an interrupted trial is retried instead of lost. Unlike Optuna's:

    - A failed trial is queued once. On SQLite, fail_stale_trials reads the trial's state
      before the transaction that writes it begins (pysqlite starts it at the UPDATE), so two
      workers starting together can both fail one stale trial and both queue it (the Office
      study's trial 22 came back as 23 and 24, training the same run into one folder). The
      check and the queueing run under a file lock beside the database.
    - A chain is given up only after MAX_RETRIES retries in a row that trained no new epoch.
      A resumed trial that a session's end cut short again has moved on; one that an out of
      memory kill stops at the same epoch each time has not.
    """

    def __init__(self, lock: Path | None):
        self.lock = lock

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        with FileLock(self.lock) if self.lock is not None else nullcontext():
            trials = {t.number: t for t in study.get_trials(deepcopy=False)}
            if any(
                t.system_attrs.get("retry_history", [None])[-1] == trial.number
                for t in trials.values()
            ):
                return
            history = [*trial.system_attrs.get("retry_history", []), trial.number]
            attempts = [trials.get(n, trial) for n in history[:-1]] + [trial]
            if stalled_attempts(attempts) > MAX_RETRIES:
                return
            study.add_trial(
                optuna.create_trial(
                    state=TrialState.WAITING,
                    params=trial.params,
                    distributions=trial.distributions,
                    user_attrs=trial.user_attrs,
                    system_attrs={
                        **trial.system_attrs,
                        "failed_trial": history[0],
                        "retry_history": history,
                    },
                )
            )


def stalled_attempts(attempts: list[FrozenTrial]) -> int:
    """How many of the latest attempts of a trial, in a row, reached no epoch beyond the
    attempt before them (the first, none at all)."""
    reached = [max(t.intermediate_values, default=0) for t in attempts]
    stalled = 0
    for before, after in zip([0, *reached[:-1]], reached, strict=True):
        stalled = stalled + 1 if after <= before else 0
    return stalled


def _lock_beside(url: str) -> Path | None:
    """The lock file of a SQLite database file (other databases lock their rows)."""
    prefix = "sqlite:///"
    return Path(url[len(prefix) :] + ".lock") if url.startswith(prefix) else None


class ClaimLockedStorage(RDBStorage):
    """An RDBStorage that claims a waiting trial under a file lock beside a SQLite file.

    Optuna hands a queued trial to one worker by reading it as WAITING and writing it as
    RUNNING in one transaction, with SELECT ... FOR UPDATE to keep a second worker out.
    SQLite has no FOR UPDATE and pysqlite begins the transaction only at the UPDATE, so two
    workers starting together can both read WAITING and both claim the trial: both train
    the preset's trial 0 and the later one's tell fails ("Cannot tell a COMPLETE trial").
    Under the lock the second worker reads RUNNING and moves on to a trial of its own.
    """

    def __init__(self, url: str, lock: Path | None, **options):
        super().__init__(url, **options)
        self.claim_lock = lock

    def set_trial_state_values(self, trial_id, state, values=None) -> bool:
        if state != TrialState.RUNNING or self.claim_lock is None:
            return super().set_trial_state_values(trial_id, state, values)
        with FileLock(self.claim_lock):
            return super().set_trial_state_values(trial_id, state, values)


def open_storage(url: str) -> RDBStorage:
    """The study's storage, with a heartbeat: a process that dies mid-trial leaves its trial
    RUNNING, and once its heartbeat is GRACE_SECONDS old the next trial to start, in any
    process, fails it and queues a copy with the same parameters, so it is retried instead
    of being lost or blocking the study."""
    # SQLite serialises writers; several workers wait for the lock instead of failing.
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return ClaimLockedStorage(
                url,
                _lock_beside(url),
                engine_kwargs=engine,
                heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=GRACE_SECONDS,
                heartbeat_stale_trial_callback=RetryOnce(_lock_beside(url)),
            )
        except Exception as err:  # sqlalchemy's errors and optuna's version checks alike
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(f"--storage {url}: cannot open ({reason})") from None


def open_study(plan: TuningPlan, sampler=None, create: bool = False) -> optuna.Study:
    options = dict(
        storage=open_storage(plan.storage),
        study_name=plan.study_name,
        sampler=sampler,
        pruner=PRUNERS[plan.pruner](),
    )
    if create:
        return optuna.create_study(**options, direction="maximize", load_if_exists=True)
    return optuna.load_study(**options)


def check_criterion(study: optuna.Study, plan: TuningPlan) -> None:
    """Trials ranked by different metrics cannot share a study."""
    recorded = study.user_attrs.get("criterion")
    if recorded is None:
        study.set_user_attr("criterion", plan.criterion)
    elif recorded != plan.criterion:
        raise ConfigError(
            f"--early-stop-metric {plan.criterion}: study {plan.study_name} in {plan.storage} "
            f"ranks by {recorded}; give that or another --study-name"
        )


def enqueue_preset(study: optuna.Study, plan: TuningPlan, log: Callable[[str], None]) -> None:
    """A new study's first trial is the preset itself, with the fixed overrides, when every
    tuned setting's preset value lies in the space: the baseline the other trials are read
    against, trained under the same protocol and seed. (The grid sampler only runs its
    grid, so it gets none.)"""
    if study.get_trials(deepcopy=False) or plan.sampler == "grid":
        return
    config = load_config(plan.preset, nest_overrides(plan.overrides))
    sections = field_types()
    params = {name: getattr(getattr(config, sections[name][0]), name) for name in plan.space}
    if not all(_contains(plan.space[name], value) for name, value in params.items()):
        log(f"study {plan.study_name}: the preset lies outside the space; no baseline trial")
        return
    study.enqueue_trial(params, user_attrs={"baseline": "preset"})
    log(f"study {plan.study_name}: trial 0 is the preset itself, the baseline")


def _contains(distribution: BaseDistribution, value) -> bool:
    if isinstance(distribution, CategoricalDistribution):
        return value in distribution.choices
    if not distribution.low <= value <= distribution.high:
        return False
    step = getattr(distribution, "step", None)
    steps = 0.0 if step is None else (value - distribution.low) / step
    return math.isclose(steps, round(steps), abs_tol=1e-9)


def suggest(trial: optuna.Trial, name: str, distribution: BaseDistribution):
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(
            name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
        )
    return trial.suggest_float(name, distribution.low, distribution.high, log=distribution.log)


def train_trial(config, on_epoch: Callable[[EpochRecord], None], log, folder: Path) -> None:
    """Train one trial's configuration; only the validation split is scored. Its training
    state goes to ``folder`` after every epoch, so that a retry of an interrupted trial
    resumes where it stopped; the folder is deleted once the trial ends (train the best
    settings with ``sigma-pyro train``)."""
    from sigma_pyro.api import SigmaRecommender

    rec = SigmaRecommender(config)
    rec.load_data()
    rec.fit(folder, resume=(folder / STATE_FILE).is_file(), log=log, on_epoch=on_epoch)


def trial_folder(plan: TuningPlan, trial: optuna.Trial) -> Path:
    """The training folder of a trial and of all its retries (the heartbeat's, or Ctrl-C's),
    named after the first of them."""
    retries = _stored(trial).system_attrs.get("retry_history", [trial.number])
    return plan.out / TRIALS_DIR / str(retries[0])


def _stored(trial: optuna.Trial) -> FrozenTrial:
    """The trial as the storage holds it (its system attributes, which a live trial does
    not expose)."""
    return next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)


def finished_epochs(folder: Path) -> list[dict]:
    """The history rows of the epochs that an interrupted trial's saved state has behind
    it (the history may hold one more: the epoch it was in when it stopped)."""
    state = folder / STATE_FILE
    if not state.is_file():
        return []
    epoch = safe_torch_load(state, map_location="cpu")["epoch"]
    return [
        row for row in TrainingHistory.read(folder / HISTORY_FILE).rows if row["epoch"] <= epoch
    ]


def objective(trial: optuna.Trial, plan: TuningPlan, log: Callable[[str], None]) -> float:
    """The best validation criterion over the trial's epochs, reported after each epoch."""
    if claimed_before(trial.study, trial.number) >= plan.trials:
        # Two workers both saw one trial missing and both asked: the later one stands down.
        # It ends as failed (which does not count; the callback then stops this worker),
        # and the reports leave it out.
        trial.set_user_attr("surplus", True)
        return math.nan
    params = {name: suggest(trial, name, d) for name, d in plan.space.items()}
    for key, value in (
        ("criterion", plan.criterion),
        ("code", plan.revision),
        ("command", plan.command),
    ):
        trial.set_user_attr(key, value)
    best: dict = {}
    started = time.perf_counter()

    def observe(epoch: int, valid: dict) -> None:
        value = valid[plan.criterion]
        if "value" not in best or value > best["value"]:
            best.update(
                value=value,
                best_epoch=epoch,
                valid={m: valid.get(m, math.nan) for m in METRICS},
            )
        best["epochs"] = epoch
        trial.report(value, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"at epoch {epoch}")

    folder = trial_folder(plan, trial)
    try:
        config = load_config(plan.preset, nest_overrides({**plan.overrides, **params}))
        # A retry picks up the curve of the epochs it does not train again.
        for row in finished_epochs(folder):
            observe(int(row["epoch"]), {m: row.get(f"valid_{m}", math.nan) for m in METRICS})
        train_trial(
            config,
            lambda record: observe(record.epoch, record.valid),
            lambda line: log(f"[trial {trial.number}] {line}"),
            folder,
        )
    except (ConfigError, TrainingError, CheckpointError) as err:
        # An impossible combination or a diverging run fails this trial only. NaN makes
        # Optuna record it as failed with one line, not the traceback of an error whose
        # message already says it all.
        trial.set_user_attr("error", str(err))
        return math.nan
    except KeyboardInterrupt:
        _queue_again(trial, plan)
        trial.set_user_attr("error", "interrupted")
        folder = None  # kept for the retry
        raise
    finally:
        best["wall_seconds"] = round(time.perf_counter() - started, 1)
        trial.set_user_attr("result", best)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    return best["value"]


def claimed_before(study: optuna.Study, number: int) -> int:
    """How many trials numbered below ``number`` have finished or are running. Numbers are
    handed out by the storage, in order, so this ranks concurrent asks."""
    return sum(t.number < number for t in study.get_trials(deepcopy=False, states=CLAIMED))


def _queue_again(trial: optuna.Trial, plan: TuningPlan) -> None:
    """Ctrl-C ends a trial as failed: queue its parameters again, as the heartbeat does for
    a dead process's trial, so that the next run retries it (and a grid keeps its point)."""
    RetryOnce(_lock_beside(plan.storage))(trial.study, _stored(trial))


def _stop_after_failures(log: Callable[[str], None]) -> Callable[[optuna.Study, FrozenTrial], None]:
    """Failed trials do not count towards the trials asked for, so a space where every
    trial fails would run for ever: stop after a few failures in a row."""
    in_a_row = 0

    def callback(study: optuna.Study, trial: FrozenTrial) -> None:
        nonlocal in_a_row
        in_a_row = in_a_row + 1 if trial.state == TrialState.FAIL else 0
        if in_a_row >= FAILURES_IN_A_ROW:
            log(f"{in_a_row} trials in a row failed; stopping (their errors are in {REPORT})")
            study.stop()

    return callback


def optimize(plan: TuningPlan, worker: int, existing: int, log: Callable[[str], None]) -> dict:
    """One worker's trials, until the study has ``plan.trials`` finished ones (or the
    timeout passes)."""
    # A resumed study must not replay the draws it began with: seed by the trials so far.
    seed = int(np.random.SeedSequence([plan.seed, existing, worker]).generate_state(1)[0])
    study = open_study(plan, make_sampler(plan.sampler, plan.space, seed))
    # A worker that starts late (a slow process start) may find the study complete: a
    # worker that finished its first trial before this one started took the last trial.
    # A dead process's trial must not count as running here: fail it (and queue its retry).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    if len(study.get_trials(deepcopy=False, states=CLAIMED)) >= plan.trials:
        return {}
    # Trials running in other workers will finish and count: without them every worker
    # that finishes a trial short of the total would start one more.
    enough = optuna.study.MaxTrialsCallback(plan.trials, states=CLAIMED)
    study.optimize(
        lambda trial: objective(trial, plan, log),
        timeout=plan.timeout,
        callbacks=[enough, _stop_after_failures(log), lambda study, _: write_reports(plan, study)],
    )
    return {}


def workers_needed(study: optuna.Study, plan: TuningPlan, jobs: int) -> int:
    """None when the study has its trials or a grid has no point left, else up to ``jobs``
    (no more than the trials missing)."""
    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    grid_done = (
        plan.sampler == "grid"
        and not waiting
        and make_sampler("grid", plan.space, None).is_exhausted(study)
    )
    return 0 if grid_done else max(0, min(jobs, plan.trials - finished))
