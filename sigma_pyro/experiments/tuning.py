"""Validation-only tuning: one-at-a-time sweeps of settings around a preset.

    from sigma_pyro.experiments.tuning import parse_sweep, run_tuning
    run_tuning("runs/tune-office", [parse_sweep("num_interests=2,8"),
                                    parse_sweep("kl_cap=0.1,0.5")],
               preset="office", overrides={"path": "../shared/data/Office_Products.txt"})

Trains the preset itself and then every swept value with all other settings left at the
preset (a full factorial grows too fast to afford on a CPU), on the same seed, and keeps
each run's validation metrics at its best (early-stopping) epoch. The test split is never
scored here, so picking the setting with the best validation metric cannot leak the test
items into the choice.

Writes ``OUT/tuning.csv`` (one row per setting, rewritten after each run, so rerunning the
same command resumes) and ``OUT/tuning.md``; each run's model goes to ``OUT/runs/<setting>``.
"""

from __future__ import annotations

import math
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from sigma_pyro.config import Config, _coerce, field_types, flag, load_config, nest_overrides
from sigma_pyro.errors import ConfigError
from sigma_pyro.experiments.compare import (
    METRICS,
    _duration,
    _number,
    _table,
    git_revision,
    override_flags,
)
from sigma_pyro.experiments.parallel import check_jobs, run_all
from sigma_pyro.runtime.checkpoint import STATE_FILE, atomic_write_bytes

BASELINE = "preset"
TUNING_METRICS = tuple(f"valid_{m}" for m in METRICS)
COLUMNS = (
    "setting",
    "status",
    *TUNING_METRICS,
    "best_epoch",
    "epochs",
    "stopped_early",
    "wall_seconds",
    "criterion",
    "code",
    "command",
)
RESULTS, REPORT = "tuning.csv", "tuning.md"
# Settings that change what is measured or how, not the model: sweeping them is a mistake.
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
    "ks",
    "mask_history",
    "early_stop_metric",
    "eval_batch_size",
    "item_chunk_size",
}


def parse_sweep(spec: str) -> tuple[str, list]:
    """``"kl_cap=0.1,0.5"`` (or ``"kl-cap=..."``) -> ``("kl_cap", [0.1, 0.5])``, each value
    read as the setting's declared type."""
    name, sep, values = spec.partition("=")
    name = name.strip().lstrip("-").replace("-", "_")
    where = f"--sweep {spec}"
    types = field_types()
    if not sep or not name or not values.strip():
        raise ConfigError(f"{where}: expected NAME=VALUE,VALUE,... (e.g. kl_cap=0.1,0.5)")
    if name not in types:
        raise ConfigError(f"{where}: unknown setting {name!r}")
    if name in NOT_TUNABLE:
        raise ConfigError(f"{where}: {name} is not a model or training setting to tune")
    hint = types[name][1]
    if getattr(hint, "__origin__", None) is list:
        raise ConfigError(f"{where}: list-valued settings cannot be swept")
    parsed = [_coerce(v.strip(), hint, where) for v in values.split(",") if v.strip()]
    if len(set(map(str, parsed))) != len(parsed):
        raise ConfigError(f"{where}: a value is given twice")
    return name, parsed


def tuning_settings(base: Config, sweeps: Sequence[tuple[str, list]]) -> dict[str, dict]:
    """Setting label -> overrides: the preset, then each swept value that differs from it."""
    if len({name for name, _ in sweeps}) != len(sweeps):
        raise ConfigError("--sweep: a setting is swept twice; give all its values in one --sweep")
    types = field_types()
    settings = {BASELINE: {}}
    for name, values in sweeps:
        current = getattr(getattr(base, types[name][0]), name)
        settings.update({f"{name}={v}": {name: v} for v in values if v != current})
    return settings


def _configs(settings: dict[str, dict], preset: str | None, overrides: dict) -> dict[str, Config]:
    """One validated configuration per setting, so that an impossible value fails before
    anything trains."""
    configs = {}
    for label, change in settings.items():
        try:
            configs[label] = load_config(preset, nest_overrides({**overrides, **change}))
        except ConfigError as err:
            raise ConfigError(f"--sweep {label}: {err}") from None
    return configs


def train_and_validate(config: Config, run_dir: Path, log: Callable[[str], None]) -> dict:
    """Train one setting; its validation metrics at the best epoch (never the test split)."""
    from sigma_pyro.api import SigmaRecommender

    rec = SigmaRecommender(config)
    rec.load_data()
    started = time.perf_counter()
    summary = rec.fit(out_dir=run_dir, resume=(run_dir / STATE_FILE).is_file(), log=log)
    valid = summary.best_valid
    return {
        **{f"valid_{m}": valid.get(m, math.nan) for m in METRICS},
        "best_epoch": summary.best_epoch,
        "epochs": summary.epochs_run,
        "stopped_early": summary.stopped_early,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def _command(out, sweeps, preset, overrides) -> str:
    words = ["sigma-pyro", "tune"] + (["--preset", preset] if preset is not None else [])
    words += ["--out", str(out), *override_flags(overrides)]
    for name, values in sweeps:
        words += ["--sweep", f"{name}={','.join(map(str, values))}"]
    return shlex.join(words)


def run_tuning(
    out_dir: str | Path,
    sweeps: Sequence[tuple[str, list]],
    preset: str | None = None,
    overrides: dict | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    jobs: int = 1,
) -> pd.DataFrame:
    """Run (or resume) the sweeps and write ``tuning.csv`` and ``tuning.md``; returns the
    table. ``sweeps`` are :func:`parse_sweep` results; ``overrides`` flat settings applied to
    every run (``path``, ``epochs``, ...); ``jobs`` settings train at once, each in its own
    process with an equal share of torch's threads (their logs go to stderr)."""
    out = Path(out_dir)
    overrides = dict(overrides or {})
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    if not sweeps:
        raise ConfigError("give at least one --sweep NAME=VALUE,...")
    check_jobs(jobs)
    for name, _ in sweeps:
        if name in overrides:
            raise ConfigError(f"--sweep {name}: also fixed by {flag(name)}; give one or the other")
    base = load_config(preset, nest_overrides(overrides))
    configs = _configs(tuning_settings(base, sweeps), preset, overrides)
    criterion = base.train.early_stop_metric
    if criterion not in METRICS:
        raise ConfigError(
            f"--early-stop-metric {criterion}: tuning ranks by one of {', '.join(METRICS)}"
        )
    command = _command(out, sweeps, preset, overrides)
    out.mkdir(parents=True, exist_ok=True)
    revision = git_revision()
    rows = pd.read_csv(out / RESULTS).to_dict("records") if (out / RESULTS).is_file() else []
    done = {str(row["setting"]) for row in rows}
    todo = [label for label in configs if label not in done]
    bar = tqdm(
        total=len(configs),
        initial=len(configs) - len(todo),
        desc="tune",
        disable=not progress,
        file=sys.stderr,
    )

    def record(label: str, row: dict) -> None:
        rows.append(
            {**row, "setting": label, "criterion": criterion, "code": revision, "command": command}
        )
        table = pd.DataFrame(rows, columns=list(COLUMNS))
        atomic_write_bytes(out / RESULTS, table.to_csv(index=False).encode("utf-8"))
        bar.update(1)

    run_all(
        {
            label: (train_and_validate, (configs[label], out / "runs" / label), f"[{label}] ")
            for label in todo
        },
        jobs,
        record,
        log,
        on_start=bar.set_postfix_str,
    )
    bar.close()
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    atomic_write_bytes(out / REPORT, render_tuning(table).encode("utf-8"))
    return table


def best_setting(table: pd.DataFrame) -> str | None:
    """The finished setting with the highest validation criterion (the preset on a tie)."""
    ok = table[table["status"] == "ok"]
    if ok.empty:
        return None
    column = f"valid_{ok['criterion'].iloc[0]}"
    top = ok[column].max()
    winners = ok[ok[column] == top]["setting"].astype(str).tolist()
    return BASELINE if BASELINE in winners else winners[0]


def tuning_table(table: pd.DataFrame) -> str:
    """Markdown: every setting tried with its validation metrics, best criterion first, then
    the settings whose training failed."""
    ok = table[table["status"] == "ok"]
    parts = []
    if len(ok):
        criterion = str(ok["criterion"].iloc[0])
        column = f"valid_{criterion}"
        reference = ok.loc[ok["setting"] == BASELINE, column]
        rows = []
        for values in ok.sort_values(column, ascending=False, kind="stable").to_dict("records"):
            delta = (
                _number(values[column] - reference.iloc[0], 4, signed=True)
                if len(reference)
                else "n/a"
            )
            rows.append(
                [
                    f"`{values['setting']}`",
                    *(_number(values[f"valid_{m}"]) for m in METRICS),
                    delta,
                    int(values["best_epoch"]),
                    int(values["epochs"]),
                    _duration(values["wall_seconds"]),
                ]
            )
        header = [
            "setting",
            *(f"valid {m}" for m in METRICS),
            f"Δ valid {criterion} vs preset",
            "best epoch",
            "epochs",
            "wall time",
        ]
        parts.append(_table(header, rows))
    failed = table[table["status"] != "ok"]
    if len(failed):
        parts.append(
            "Failed: " + "; ".join(f"`{r.setting}` ({r.status})" for r in failed.itertuples())
        )
    return "\n\n".join(parts)


def tuning_provenance(table: pd.DataFrame) -> str:
    """The command(s) and commit(s) that produced the rows."""
    commands = list(dict.fromkeys(table["command"].dropna().astype(str)))
    codes = sorted(table["code"].dropna().astype(str).unique())
    lines = [f"    {command}" for command in commands] or ["    (command not recorded)"]
    return "\n".join(lines) + f"\n\nCode: {', '.join(codes) or 'n/a'}."


def tuning_summary(table: pd.DataFrame) -> str:
    """The command that ran the sweep, the best setting and the table of every setting."""
    best = best_setting(table)
    ok = table[table["status"] == "ok"]
    choice = (
        f"Best validation {ok['criterion'].iloc[0]}: `{best}`."
        if best is not None
        else "No finished tuning runs."
    )
    return "\n\n".join(
        part for part in (tuning_provenance(table), choice, tuning_table(table)) if part
    )


def render_tuning(table: pd.DataFrame) -> str:
    return (
        "# Tuning on validation\n\nGenerated by `sigma-pyro tune`; the test split was not "
        "scored.\n\n" + tuning_summary(table) + "\n"
    )
