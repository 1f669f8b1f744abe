"""The prior comparison: train every (prior, seed) of a grid on the same data and settings,
and report test metrics, held-out likelihood, recommendation diversity and (on synthetic
data) how well the learned clusters recover the planted ones.

    from sigma_pyro.experiments.compare import run_comparison
    run_comparison("runs/compare", priors=["normal", "sigma"], seeds=3, preset="synthetic")

Writes ``OUT/results.csv`` (one row per run, rewritten atomically after each run, so an
interrupted grid resumes: rows already there are skipped, and a run interrupted mid-training
continues from its ``last.pt``), ``OUT/summary.md`` and ``OUT/baselines.json``; each run's
model goes to ``OUT/runs/<prior>-seed<k>``. Seeds change the initialisation and the order of
the batches, never the data, so runs of different priors with the same seed are paired.
What one run measures is :mod:`~sigma_pyro.experiments.measure`; the summary is
:mod:`~sigma_pyro.experiments.compare_summary`.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from sigma_pyro.config import Config, load_config, nest_overrides
from sigma_pyro.errors import ConfigError
from sigma_pyro.experiments.compare_summary import render_summary
from sigma_pyro.experiments.measure import DIVERSITY_K, baselines, train_and_measure
from sigma_pyro.experiments.metrics import METRICS
from sigma_pyro.experiments.parallel import check_jobs, run_all
from sigma_pyro.experiments.reporting import git_revision, override_flags
from sigma_pyro.runtime.checkpoint import atomic_write_bytes, atomic_write_json, read_json
from sigma_pyro.runtime.progress import progress_bar

DEFAULT_PRIORS = ("normal", "gmm", "vamp", "sigma", "sigma-uniform")
COLUMNS = (
    "prior",
    "seed",
    "status",
    *METRICS,
    "final_elbo_per_token",
    "iwae_per_token",
    f"diversity@{DIVERSITY_K}",
    f"diversity_own@{DIVERSITY_K}",
    "nmi_items",
    "nmi_items_chance",
    "nmi_users",
    "nmi_users_chance",
    "nmi_users_oracle",
    "best_epoch",
    "epochs",
    "stopped_early",
    "wall_seconds",
    "run_dir",
    "code",
)
RESULTS, SUMMARY, BASELINES = "results.csv", "summary.md", "baselines.json"


def command_line(
    out_dir,
    priors: Sequence[str],
    seeds: int,
    preset: str | None,
    overrides: dict,
    iwae_samples: int,
) -> str:
    """The ``sigma-pyro compare`` invocation that reproduces a grid."""
    words = ["sigma-pyro", "compare"]
    if preset is not None:
        words += ["--preset", preset]
    words += [
        "--priors",
        ",".join(priors),
        "--seeds",
        str(seeds),
        "--out",
        str(out_dir),
        "--iwae-samples",
        str(iwae_samples),
        *override_flags(overrides),
    ]
    return shlex.join(words)


def _grid_configs(
    priors: Sequence[str], seeds: int, preset: str | None, overrides: dict
) -> tuple[Config, dict[tuple[str, int], Config]]:
    """The base configuration and one validated configuration per (prior, seed), so that an
    impossible combination fails before anything trains."""
    if "prior" in overrides:
        raise ConfigError("compare: give the priors to compare with --priors, not --prior")
    if not priors or len(set(priors)) != len(priors):
        raise ConfigError(f"--priors must name distinct priors, got {','.join(priors)!r}")
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    nested = nest_overrides(overrides)
    base = load_config(preset, nested)
    configs = {}
    # Seed-major: an interrupted grid holds whole seeds, each a complete paired comparison.
    for seed in range(base.train.seed, base.train.seed + seeds):
        for prior in priors:
            values = {
                **nested,
                "model": {**nested.get("model", {}), "prior": prior},
                "train": {**nested.get("train", {}), "seed": seed},
            }
            try:
                configs[prior, seed] = load_config(preset, values)
            except ConfigError as err:
                raise ConfigError(f"--priors {prior}: {err}") from None
    return base, configs


def _read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return pd.read_csv(path).to_dict("records")


def _table_of(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(COLUMNS))


def run_comparison(
    out_dir: str | Path,
    priors: Sequence[str] = DEFAULT_PRIORS,
    seeds: int = 3,
    preset: str | None = None,
    overrides: dict | None = None,
    iwae_samples: int = 20,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    jobs: int = 1,
) -> pd.DataFrame:
    """Run (or resume) the grid ``priors x seeds`` and write the results and the summary.

    ``overrides`` are flat settings as for :meth:`SigmaRecommender.from_preset` (``path``,
    ``epochs``, ...); seeds are ``seed, seed + 1, ...`` from the configured seed. A run whose
    training diverges is recorded with its error as status and the grid goes on. ``jobs``
    runs train side by side (:mod:`sigma_pyro.experiments.parallel`; their logs go to
    stderr). Returns the results table.
    """
    out = Path(out_dir)
    priors, overrides = list(priors), dict(overrides or {})
    check_jobs(jobs)
    if iwae_samples < 0:
        raise ConfigError(f"--iwae-samples must be 0 (skip) or more, got {iwae_samples}")
    base, configs = _grid_configs(priors, seeds, preset, overrides)
    command = command_line(out, priors, seeds, preset, overrides, iwae_samples)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / BASELINES).is_file():
        atomic_write_json(baselines(base), out / BASELINES)
    grid = _Grid(out, configs, iwae_samples, progress)
    run_all(grid.calls(), jobs, grid.record, log or _stderr, on_start=grid.started)
    grid.bar.close()
    results = grid.table()
    write_summary(out, results, command)
    return results


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class _Grid:
    """The runs of a grid that ``results.csv`` does not hold yet, and the table each
    finished run is added to."""

    def __init__(
        self, out: Path, configs: dict[tuple[str, int], Config], iwae_samples: int, progress: bool
    ):
        self.out, self.configs, self.iwae_samples = out, configs, iwae_samples
        # The code a run trained with, taken before training: commits made while a long grid
        # runs must not be credited with its results.
        self.revision = git_revision()
        self.rows = _read_rows(out / RESULTS)
        done = {(str(row["prior"]), int(row["seed"])) for row in self.rows}
        self.todo = [key for key in configs if key not in done]
        self.bar = progress_bar(
            total=len(configs),
            enabled=progress,
            initial=len(configs) - len(self.todo),
            desc="compare",
        )

    def run_dir(self, key: tuple[str, int]) -> Path:
        return self.out / "runs" / f"{key[0]}-seed{key[1]}"

    def calls(self) -> dict[tuple[str, int], tuple]:
        return {
            key: (
                train_and_measure,
                (self.configs[key], self.run_dir(key), self.iwae_samples),
                f"[{key[0]} seed {key[1]}] ",
            )
            for key in self.todo
        }

    def started(self, key: tuple[str, int]) -> None:
        self.bar.set_postfix_str(f"{key[0]} seed {key[1]}")

    def record(self, key: tuple[str, int], row: dict) -> None:
        """Add a finished run and rewrite ``results.csv`` atomically, so that an interrupted
        grid resumes after the last run it finished."""
        self.rows.append(
            {
                **row,
                "prior": key[0],
                "seed": key[1],
                "run_dir": str(self.run_dir(key).relative_to(self.out)),
                "code": self.revision,
            }
        )
        table = self.table().to_csv(index=False).encode("utf-8")
        atomic_write_bytes(self.out / RESULTS, table)
        self.bar.update(1)

    def table(self) -> pd.DataFrame:
        return _table_of(self.rows)


def write_summary(out: Path, results: pd.DataFrame, command: str) -> None:
    baselines = read_json(out / BASELINES) if (out / BASELINES).is_file() else None
    codes = results["code"].dropna().astype(str).unique() if "code" in results else []
    text = render_summary(results, command, ", ".join(sorted(codes)) or git_revision(), baselines)
    atomic_write_bytes(out / SUMMARY, text.encode("utf-8"))
