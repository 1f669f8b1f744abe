"""``tuning.csv`` and ``tuning.md`` of ``sigma-pyro tune``: every trial with its state,
parameters and validation metrics at its best epoch, best first, and never a test metric."""

from __future__ import annotations

import math
import shlex
from typing import TYPE_CHECKING

import optuna
import pandas as pd
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from sigma_pyro.experiments.metrics import METRICS
from sigma_pyro.experiments.reporting import duration, markdown_table, number, override_flags
from sigma_pyro.experiments.search_space import describe
from sigma_pyro.experiments.tuned_preset import BEST_PRESET, best_preset_text
from sigma_pyro.runtime.checkpoint import atomic_write_bytes

if TYPE_CHECKING:
    from sigma_pyro.experiments.study import TuningPlan

TUNING_METRICS = tuple(f"valid_{m}" for m in METRICS)
PARAM = "param_"  # prefix of the parameter columns: "epochs" is both a setting and a column
RESULTS, REPORT = "tuning.csv", "tuning.md"
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
    "baseline",
    "error",
    "code",
    "command",
)


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
        "baseline": trial.user_attrs.get("baseline"),
        "error": trial.user_attrs.get("error"),
        "code": trial.user_attrs.get("code"),
        "command": trial.user_attrs.get("command"),
    }


def write_reports(plan: TuningPlan, study: optuna.Study) -> pd.DataFrame:
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]
    table = trials_table(trials, plan.space)
    atomic_write_bytes(plan.out / RESULTS, table.to_csv(index=False).encode("utf-8"))
    atomic_write_bytes(plan.out / REPORT, render_tuning(table, plan).encode("utf-8"))
    best = best_trial(table)
    if best is not None:
        trial = next(t for t in trials if t.number == best["number"])
        text = best_preset_text(plan, trial)
        atomic_write_bytes(plan.out / BEST_PRESET, text.encode("utf-8"))
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
    retry, baseline = row.get("retry_of"), row.get("baseline")
    state = row["state"] if pd.isna(retry) else f"{row['state']} (retry of {int(retry)})"
    return state if pd.isna(baseline) else f"{state}, the {baseline}"


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
            f"They are also a preset, `{plan.out / BEST_PRESET}`, each value commented with "
            "the trial that chose it.",
        ]
    space = [[f"`{name}`", describe(d)] for name, d in plan.space.items()]
    parts += [
        f"## Search space\n\n{' and '.join(f'`{s}`' for s in plan.space_sources)}:",
        markdown_table(["setting", "values"], space),
    ]
    return "\n\n".join(parts) + "\n"
