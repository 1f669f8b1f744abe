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

import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from sigma_pyro.config import load_config, nest_overrides
from sigma_pyro.errors import ConfigError
from sigma_pyro.experiments.metrics import METRICS
from sigma_pyro.experiments.parallel import check_jobs, run_all
from sigma_pyro.experiments.reporting import git_revision, override_flags
from sigma_pyro.experiments.search_space import load_space
from sigma_pyro.experiments.study import (
    PRUNERS,
    TuningPlan,
    check_criterion,
    enqueue_preset,
    make_sampler,
    open_study,
    optimize,
    workers_needed,
)
from sigma_pyro.experiments.tuning_report import write_reports

STUDY_FILE = "study.db"


def command_line(
    out: Path,
    spaces: tuple[str, ...],
    trials: int,
    preset: str | None,
    overrides: dict,
    options: dict,
) -> str:
    """The ``sigma-pyro tune`` invocation that resumes (or, with a larger ``--trials``,
    extends) the study."""
    words = ["sigma-pyro", "tune", *(w for space in spaces for w in ("--space", space))]
    words += ["--trials", str(trials), "--out", str(out)]
    words += ["--preset", preset] if preset is not None else []
    for option, value in options.items():
        words += [option, str(value)] if value is not None else []
    return shlex.join([*words, *override_flags(overrides)])


def run_tuning(
    out_dir: str | Path,
    space: str | Path | Sequence[str | Path],
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
    returns the table of every trial. ``space`` is a YAML file or a shipped space's name,
    or several that together make one space (:func:`load_space`); ``overrides`` are flat
    settings fixed for every trial (``path``, ``epochs``, ...); ``jobs`` worker processes run
    trials side by side, each with an equal share of torch's threads (their logs go to
    stderr)."""
    out = Path(out_dir)
    plan = _plan(
        out,
        tuple(map(str, [space] if isinstance(space, (str, Path)) else space)),
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
    check_criterion(study, plan)
    log = log or _stderr
    enqueue_preset(study, plan, log)
    try:
        workers = workers_needed(study, plan, jobs)
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
    spaces: tuple[str, ...],
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
    distributions = load_space(spaces, preset, overrides)
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
        space_sources=spaces,
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
        command=command_line(out, spaces, trials, preset, overrides, options),
        revision=git_revision(),
    )


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
