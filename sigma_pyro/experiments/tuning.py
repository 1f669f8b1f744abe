"""Validation-only tuning: an Optuna study of settings around a preset.

    from sigma_pyro.experiments.tuning import run_tuning
    run_tuning("runs/tune-office", "kl", trials=30, preset="office",
               overrides={"path": "../shared/data/Office_Products.txt"})

The search space is a YAML file (:func:`load_space`; commented examples ship in
``sigma_pyro/presets/spaces``). Every trial trains the preset with the fixed ``overrides``
and the sampled settings, on the same seed, and scores the best validation early-stopping
metric over its epochs. The metric is reported after every epoch, so the pruner can stop a
trial that trails the others. The test split is never scored here, so picking the best
trial cannot leak the test items into the choice.

The study lives in an Optuna storage, by default the SQLite file ``OUT/study.db``: rerunning
the same command resumes it and a larger ``trials`` extends it. ``OUT/tuning.csv`` (one row
per trial) and ``OUT/tuning.md`` are rewritten after every finished trial.
"""

from __future__ import annotations

import math
import shlex
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from sigma_pyro.config import (
    field_types,
    flag,
    load_config,
    nest_overrides,
    read_yaml,
    space_path,
)
from sigma_pyro.errors import ConfigError
from sigma_pyro.experiments.compare import METRICS
from sigma_pyro.experiments.parallel import check_jobs, run_all
from sigma_pyro.experiments.reporting import (
    duration,
    git_revision,
    markdown_table,
    number,
    override_flags,
)
from sigma_pyro.inference.training import EpochRecord, TrainingError
from sigma_pyro.runtime.checkpoint import atomic_write_bytes

TUNING_METRICS = tuple(f"valid_{m}" for m in METRICS)
PARAM = "param_"  # prefix of the parameter columns: "epochs" is both a setting and a column
RESULTS, REPORT, STUDY_FILE = "tuning.csv", "tuning.md", "study.db"
# Settings that change what is measured or how, not the model: tuning them is a mistake.
NOT_TUNABLE = {
    "path",
    "format",
    "user_column",
    "item_column",
    "time_column",
    "rating_column",
    "min_rating",
    "kcore",
    "synthetic_users",
    "synthetic_items",
    "synthetic_categories",
    "synthetic_seed",
    "seed",
    "device",
    "progress",
    "tensorboard",
    "ks",
    "mask_history",
    "early_stop_metric",
    "eval_batch_size",
    "item_chunk_size",
}
SPEC_KEYS = {
    "float": ("low", "high", "log"),
    "int": ("low", "high", "step", "log"),
    "categorical": ("choices",),
}
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
MAX_RETRIES = 2  # a trial that keeps killing its process (out of memory) is given up
FAILURES_IN_A_ROW = 3
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
STATE_NAMES = {
    TrialState.COMPLETE: "complete",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
    TrialState.RUNNING: "running",
    TrialState.WAITING: "waiting",
}
FINISHED_STATES = tuple(STATE_NAMES[state] for state in FINISHED)
COLUMNS_AFTER_PARAMS = (
    *TUNING_METRICS,
    "best_epoch",
    "epochs",
    "wall_seconds",
    "criterion",
    "retry_of",
    "error",
    "code",
    "command",
)


# -- the search space ---------------------------------------------------------------------------


def load_space(
    source: str | Path, preset: str | None = None, overrides: dict | None = None
) -> dict[str, BaseDistribution]:
    """Setting -> Optuna distribution, from a YAML mapping of settings to specs::

        lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
        num_layers: {type: int, low: 1, high: 3}          # also step
        hidden_size: {type: categorical, choices: [64, 128, 256]}

    Each bound and choice is checked by building the preset's configuration with it (and
    the fixed ``overrides``), so that a value the configuration rejects fails before any
    trial trains."""
    path = space_path(str(source))
    specs = read_yaml(path)
    if not isinstance(specs, dict) or not specs:
        raise ConfigError(
            f"{path}: expected a mapping of settings to search specs, "
            "e.g. lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}"
        )
    overrides = dict(overrides or {})
    space = {}
    for name, spec in specs.items():
        where = f"{path}: {name}"
        kind = _tunable_type(where, name, overrides)
        space[name] = _checked(where, name, _distribution(where, spec, kind), preset, overrides)
    return space


def _tunable_type(where: str, name, overrides: dict) -> type:
    """The declared type of a setting that may be tuned."""
    types = field_types()
    if name not in types:
        raise ConfigError(f"{where}: unknown setting")
    if name in NOT_TUNABLE:
        raise ConfigError(f"{where}: not a model or training setting to tune")
    if name in overrides:
        raise ConfigError(f"{where}: also fixed by {flag(name)}; give one or the other")
    hint = types[name][1]
    if getattr(hint, "__origin__", None) is list:
        raise ConfigError(f"{where}: list-valued settings cannot be tuned")
    return hint


def _distribution(where: str, spec, hint: type) -> BaseDistribution:
    if not isinstance(spec, dict) or spec.get("type") not in SPEC_KEYS:
        raise ConfigError(f"{where}: expected {{type: float|int|categorical, ...}}, got {spec!r}")
    kind = spec["type"]
    unknown = [str(key) for key in spec if key != "type" and key not in SPEC_KEYS[kind]]
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)} for type {kind} "
            f"(expected {', '.join(SPEC_KEYS[kind])})"
        )
    if kind == "categorical":
        return _categorical(where, spec)
    if hint is not (float if kind == "float" else int):
        fits = "float" if hint is float else "int" if hint is int else "categorical"
        raise ConfigError(
            f"{where}: a {kind} range for a setting of type "
            f"{getattr(hint, '__name__', hint)}; use type: {fits}"
        )
    low, high = (_bound(where, key, spec, kind) for key in ("low", "high"))
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false, got {log!r}")
    if not low < high:
        raise ConfigError(f"{where}: low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, got {low}")
    if kind == "float":
        return FloatDistribution(low, high, log=log)
    return IntDistribution(low, high, log=log, step=_step(where, spec, low, high, log))


def _bound(where: str, key: str, spec: dict, kind: str) -> float:
    if key not in spec:
        raise ConfigError(f"{where}: a {kind} range needs low and high")
    value = spec[key]
    if kind == "int" and not (isinstance(value, int) and not isinstance(value, bool)):
        raise ConfigError(f"{where}: {key} must be an integer, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        # YAML 1.1 reads 1e-4 (no dot) as text.
        hint = "; write 1e-4 as 1.0e-4" if isinstance(value, str) else ""
        raise ConfigError(f"{where}: {key} must be a number, got {value!r}{hint}")
    return float(value) if kind == "float" else value


def _step(where: str, spec: dict, low: int, high: int, log: bool) -> int:
    step = spec.get("step", 1)
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ConfigError(f"{where}: step must be a positive integer, got {step!r}")
    if log and step != 1:
        raise ConfigError(f"{where}: a log range cannot have a step")
    if (high - low) % step:
        raise ConfigError(f"{where}: high - low ({high - low}) must be a multiple of step ({step})")
    return step


def _categorical(where: str, spec: dict) -> CategoricalDistribution:
    choices = spec.get("choices")
    if not isinstance(choices, list) or len(choices) < 2:
        raise ConfigError(
            f"{where}: choices must be a list of at least two values, got {choices!r}"
        )
    if not all(c is None or isinstance(c, (bool, int, float, str)) for c in choices):
        raise ConfigError(f"{where}: each choice must be a single value, got {choices!r}")
    return CategoricalDistribution(choices)


def _checked(
    where: str, name: str, distribution: BaseDistribution, preset: str | None, overrides: dict
) -> BaseDistribution:
    """The distribution whose bounds or choices the configuration accepts; choices become
    the setting's type (a YAML 1 of a float setting is 1.0)."""
    categorical = isinstance(distribution, CategoricalDistribution)
    candidates = distribution.choices if categorical else (distribution.low, distribution.high)
    section = field_types()[name][0]
    values = []
    for value in candidates:
        try:
            config = load_config(preset, nest_overrides({**overrides, name: value}))
        except ConfigError as err:
            raise ConfigError(f"{where}: {value!r} is rejected: {err}") from None
        values.append(getattr(getattr(config, section), name))
    if not categorical:
        return distribution
    if len(set(values)) != len(values):
        raise ConfigError(f"{where}: a choice is given twice")
    return CategoricalDistribution(values)


def describe(distribution: BaseDistribution) -> str:
    """A distribution in words, for the report."""
    if isinstance(distribution, CategoricalDistribution):
        return "one of " + ", ".join(map(str, distribution.choices))
    kind = "integers" if isinstance(distribution, IntDistribution) else "reals"
    text = f"{kind} {distribution.low:g} to {distribution.high:g}"
    if isinstance(distribution, IntDistribution) and distribution.step != 1:
        text += f" in steps of {distribution.step}"
    return text + (", log-uniform" if distribution.log else "")


# -- the study ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TuningPlan:
    """Everything a worker process needs to run trials of the study."""

    out: Path
    space_source: str
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


def _retry_callback() -> RetryHeartbeatStaleTrialCallback:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)


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
            return RDBStorage(
                url,
                engine_kwargs=engine,
                heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=GRACE_SECONDS,
                heartbeat_stale_trial_callback=_retry_callback(),
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


def _check_criterion(study: optuna.Study, plan: TuningPlan) -> None:
    """Trials ranked by different metrics cannot share a study."""
    recorded = study.user_attrs.get("criterion")
    if recorded is None:
        study.set_user_attr("criterion", plan.criterion)
    elif recorded != plan.criterion:
        raise ConfigError(
            f"--early-stop-metric {plan.criterion}: study {plan.study_name} in {plan.storage} "
            f"ranks by {recorded}; give that or another --study-name"
        )


def suggest(trial: optuna.Trial, name: str, distribution: BaseDistribution):
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(
            name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
        )
    return trial.suggest_float(name, distribution.low, distribution.high, log=distribution.log)


def train_trial(config, on_epoch: Callable[[EpochRecord], None], log) -> None:
    """Train one trial's configuration; only the validation split is scored, and nothing is
    saved (train the best settings with ``sigma-pyro train``)."""
    from sigma_pyro.api import SigmaRecommender

    rec = SigmaRecommender(config)
    rec.load_data()
    rec.fit(log=log, on_epoch=on_epoch)


def objective(trial: optuna.Trial, plan: TuningPlan, log: Callable[[str], None]) -> float:
    """The best validation criterion over the trial's epochs, reported after each epoch."""
    params = {name: suggest(trial, name, d) for name, d in plan.space.items()}
    for key, value in (
        ("criterion", plan.criterion),
        ("code", plan.revision),
        ("command", plan.command),
    ):
        trial.set_user_attr(key, value)
    best: dict = {}
    started = time.perf_counter()

    def on_epoch(record: EpochRecord) -> None:
        value = record.valid[plan.criterion]
        if "value" not in best or value > best["value"]:
            best.update(
                value=value,
                best_epoch=record.epoch,
                valid={m: record.valid.get(m, math.nan) for m in METRICS},
            )
        best["epochs"] = record.epoch
        trial.report(value, record.epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"at epoch {record.epoch}")

    try:
        config = load_config(plan.preset, nest_overrides({**plan.overrides, **params}))
        train_trial(config, on_epoch, lambda line: log(f"[trial {trial.number}] {line}"))
    except (ConfigError, TrainingError) as err:
        # An impossible combination or a diverging run fails this trial only. NaN makes
        # Optuna record it as failed with one line, not the traceback of an error whose
        # message already says it all.
        trial.set_user_attr("error", str(err))
        return math.nan
    except KeyboardInterrupt:
        _queue_again(trial)
        trial.set_user_attr("error", "interrupted")
        raise
    finally:
        best["wall_seconds"] = round(time.perf_counter() - started, 1)
        trial.set_user_attr("result", best)
    return best["value"]


def _queue_again(trial: optuna.Trial) -> None:
    """Ctrl-C ends a trial as failed: queue its parameters again, as the heartbeat does for
    a dead process's trial, so that the next run retries it (and a grid keeps its point)."""
    frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
    _retry_callback()(trial.study, frozen)


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
    # Trials running in other workers will finish and count: without them every worker
    # that finishes a trial short of the total would start one more.
    enough = optuna.study.MaxTrialsCallback(plan.trials, states=(*FINISHED, TrialState.RUNNING))
    study.optimize(
        lambda trial: objective(trial, plan, log),
        timeout=plan.timeout,
        callbacks=[enough, _stop_after_failures(log), lambda study, _: write_reports(plan, study)],
    )
    return {}


def _workers_needed(study: optuna.Study, plan: TuningPlan, jobs: int) -> int:
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


def command_line(
    out: Path,
    space: str,
    trials: int,
    preset: str | None,
    overrides: dict,
    options: dict,
) -> str:
    """The ``sigma-pyro tune`` invocation that resumes (or, with a larger ``--trials``,
    extends) the study."""
    words = ["sigma-pyro", "tune", "--space", space, "--trials", str(trials), "--out", str(out)]
    words += ["--preset", preset] if preset is not None else []
    for option, value in options.items():
        words += [option, str(value)] if value is not None else []
    return shlex.join([*words, *override_flags(overrides)])


def run_tuning(
    out_dir: str | Path,
    space: str | Path,
    trials: int,
    preset: str | None = None,
    overrides: dict | None = None,
    *,
    timeout: float | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    sampler: str = "tpe",
    pruner: str = "median",
    jobs: int = 1,
    log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Run (or resume) the study until it has ``trials`` finished trials (complete or
    pruned) or ``timeout`` seconds have passed, and write ``tuning.csv`` and ``tuning.md``;
    returns the table of every trial. ``space`` is a YAML file or a shipped space's name
    (:func:`load_space`); ``overrides`` are flat settings fixed for every trial (``path``,
    ``epochs``, ...); ``jobs`` worker processes run trials side by side, each with an equal
    share of torch's threads (their logs go to stderr)."""
    out = Path(out_dir)
    plan = _plan(
        out,
        str(space),
        trials,
        preset,
        dict(overrides or {}),
        timeout=timeout,
        storage=storage,
        study_name=study_name,
        sampler=sampler,
        pruner=pruner,
        jobs=jobs,
    )
    out.mkdir(parents=True, exist_ok=True)
    study = open_study(plan, create=True)
    _check_criterion(study, plan)
    log = log or _stderr
    try:
        workers = _workers_needed(study, plan, jobs)
        existing = len(study.get_trials(deepcopy=False))
        tag = (lambda worker: f"[worker {worker}] ") if jobs > 1 else (lambda worker: "")
        calls = {w: (optimize, (plan, w, existing), tag(w)) for w in range(workers)}
        if calls:
            run_all(calls, workers, lambda worker, result: None, log)
        else:
            log(f"study {plan.study_name}: nothing left to run for --trials {plan.trials}")
    finally:
        table = write_reports(plan, study)
    return table


def _plan(
    out: Path,
    space: str,
    trials: int,
    preset: str | None,
    overrides: dict,
    *,
    timeout: float | None,
    storage: str | None,
    study_name: str | None,
    sampler: str,
    pruner: str,
    jobs: int,
) -> TuningPlan:
    """The validated plan: every error here comes before anything is created."""
    check_jobs(jobs)
    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    if timeout is not None and not timeout > 0:
        raise ConfigError(f"--timeout must be positive, got {timeout}")
    if pruner not in PRUNERS:
        raise ConfigError(f"--pruner {pruner!r} is unknown (choose from {', '.join(PRUNERS)})")
    base = load_config(preset, nest_overrides(overrides))
    criterion = base.train.early_stop_metric
    if criterion not in METRICS:
        raise ConfigError(
            f"--early-stop-metric {criterion}: tuning ranks by one of {', '.join(METRICS)}"
        )
    distributions = load_space(space, preset, overrides)
    make_sampler(sampler, distributions, None)
    options = {
        "--storage": storage,
        "--study-name": study_name,
        "--sampler": sampler,
        "--pruner": pruner,
        "--timeout": timeout,
        "--jobs": jobs if jobs > 1 else None,
    }
    return TuningPlan(
        out=out,
        space_source=space,
        space=distributions,
        trials=trials,
        preset=preset,
        overrides=overrides,
        storage=storage or f"sqlite:///{(out / STUDY_FILE).resolve()}",
        study_name=study_name or out.resolve().name,
        sampler=sampler,
        pruner=pruner,
        seed=base.train.seed,
        timeout=timeout,
        criterion=criterion,
        command=command_line(out, space, trials, preset, overrides, options),
        revision=git_revision(),
    )


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# -- the reports --------------------------------------------------------------------------------


def trials_table(trials: list[FrozenTrial], space: dict[str, BaseDistribution]) -> pd.DataFrame:
    """One row per trial: its state, parameters and validation metrics at its best epoch."""
    names = list(dict.fromkeys([*space, *(name for t in trials for name in t.params)]))
    columns = ["number", "state", *(PARAM + n for n in names), *COLUMNS_AFTER_PARAMS]
    return pd.DataFrame([_trial_row(t, names) for t in trials], columns=columns)


def _trial_row(trial: FrozenTrial, names: list[str]) -> dict:
    result = trial.user_attrs.get("result", {})
    valid = result.get("valid", {})
    return {
        "number": trial.number,
        "state": STATE_NAMES.get(trial.state, trial.state.name.lower()),
        **{PARAM + name: trial.params.get(name) for name in names},
        **{f"valid_{m}": valid.get(m, math.nan) for m in METRICS},
        "best_epoch": result.get("best_epoch"),
        "epochs": result.get("epochs"),
        "wall_seconds": result.get("wall_seconds"),
        "criterion": trial.user_attrs.get("criterion"),
        "retry_of": trial.system_attrs.get("failed_trial"),
        "error": trial.user_attrs.get("error"),
        "code": trial.user_attrs.get("code"),
        "command": trial.user_attrs.get("command"),
    }


def write_reports(plan: TuningPlan, study: optuna.Study) -> pd.DataFrame:
    table = trials_table(study.get_trials(deepcopy=False), plan.space)
    atomic_write_bytes(plan.out / RESULTS, table.to_csv(index=False).encode("utf-8"))
    atomic_write_bytes(plan.out / REPORT, render_tuning(table, plan).encode("utf-8"))
    return table


def ranked(table: pd.DataFrame) -> pd.DataFrame:
    """Complete trials best first, then pruned ones best first (by their best epoch so
    far), then the rest by number."""
    criterion = _criterion(table)
    order = {"complete": 0, "pruned": 1}
    key = table["state"].map(order).fillna(2)
    score = table[f"valid_{criterion}"] if criterion else pd.Series(math.nan, index=table.index)
    frame = table.assign(_group=key, _score=-score.fillna(-math.inf), _number=table["number"])
    return frame.sort_values(["_group", "_score", "_number"], kind="stable").drop(
        columns=["_group", "_score", "_number"]
    )


def _criterion(table: pd.DataFrame) -> str | None:
    known = table["criterion"].dropna()
    return str(known.iloc[0]) if len(known) else None


def _value(value) -> str:
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.4g}"
    return str(value)


def _params(row: dict) -> dict:
    """A row's parameters, without those its trial did not set (empty in the CSV)."""
    return {
        key[len(PARAM) :]: value
        for key, value in row.items()
        if key.startswith(PARAM) and not pd.isna(value)
    }


def settings(row: dict) -> str:
    """A trial's parameters as ``name=value``; a row without any is the preset itself."""
    return ", ".join(f"{name}={_value(value)}" for name, value in _params(row).items()) or "preset"


def _state(row: dict) -> str:
    retry = row.get("retry_of")
    return row["state"] if pd.isna(retry) else f"{row['state']} (retry of {int(retry)})"


def _count(value) -> str | int:
    return "–" if pd.isna(value) else int(value)


def best_trial(table: pd.DataFrame) -> dict | None:
    complete = ranked(table)
    complete = complete[complete["state"] == "complete"]
    return None if complete.empty else complete.iloc[0].to_dict()


def trials_markdown(table: pd.DataFrame) -> str:
    """Every trial with its validation metrics at its best epoch, best first; then why the
    failed ones failed."""
    rows = [
        [
            int(row["number"]),
            _state(row),
            f"`{settings(row)}`",
            *(number(row[f"valid_{m}"]) for m in METRICS),
            _count(row["best_epoch"]),
            _count(row["epochs"]),
            "–" if pd.isna(row["wall_seconds"]) else duration(row["wall_seconds"]),
        ]
        for row in ranked(table).to_dict("records")
    ]
    header = [
        "trial",
        "state",
        "settings",
        *(f"valid {m}" for m in METRICS),
        "best epoch",
        "epochs",
        "wall time",
    ]
    parts = [markdown_table(header, rows)]
    errors = table[table["error"].notna()]
    if len(errors):
        parts.append(
            "Failed: "
            + "; ".join(f"trial {int(r.number)} ({r.error})" for r in errors.itertuples())
        )
    return "\n\n".join(parts)


def tuning_provenance(table: pd.DataFrame) -> str:
    """The command(s) and commit(s) that ran the trials."""
    commands = list(dict.fromkeys(table["command"].dropna().astype(str)))
    codes = sorted(table["code"].dropna().astype(str).unique())
    lines = [f"    {command}" for command in commands] or ["    (command not recorded)"]
    return "\n".join(lines) + f"\n\nCode: {', '.join(codes) or 'n/a'}."


def tuning_summary(table: pd.DataFrame) -> str:
    """How many trials of each state, the best trial and the table of every trial."""
    if table.empty:
        return "No trials yet."
    counts = table["state"].value_counts()
    states = ", ".join(f"{counts[s]} {s}" for s in dict.fromkeys(table["state"]))
    best = best_trial(table)
    choice = (
        f"Best validation {best['criterion']}: trial {int(best['number'])}, "
        f"`{settings(best)}`, {number(best['valid_' + best['criterion']])} at epoch "
        f"{int(best['best_epoch'])}."
        if best is not None
        else "No complete trials."
    )
    return f"{len(table)} trials: {states}.\n\n{choice}\n\n{trials_markdown(table)}"


def render_tuning(table: pd.DataFrame, plan: TuningPlan) -> str:
    finished = int(table["state"].isin(FINISHED_STATES).sum())
    parts = [
        "# Tuning on validation",
        f"Generated by `sigma-pyro tune`; the test split was not scored. Trials rank by their "
        f"best validation {plan.criterion} over their epochs; {finished} of the "
        f"{plan.trials} asked for have finished (complete or pruned). Resume the study, or "
        "extend it with a larger --trials, with:",
        f"    {plan.command}",
        tuning_summary(table),
    ]
    best = best_trial(table)
    if best is not None:
        train = ["sigma-pyro", "train", *(["--preset", plan.preset] if plan.preset else [])]
        train += [*override_flags({**plan.overrides, **_params(best)})]
        train += ["--out", str(plan.out / "best")]
        parts += [
            "Train the best settings (and then score them on test) with:",
            f"    {shlex.join(train)}",
        ]
    space = [[f"`{name}`", describe(d)] for name, d in plan.space.items()]
    parts += [
        f"## Search space\n\n`{plan.space_source}`:",
        markdown_table(["setting", "values"], space),
    ]
    return "\n\n".join(parts) + "\n"
