"""The results table of the paper's datasets (``docs/results.md``), regenerated from the raw
runs that ``sigma-pyro compare`` records, one ``results.csv`` per dataset:

    from sigma_pyro.experiments.results_table import write_results
    write_results(["results/Beauty.csv", "results/Office_Products.csv"], "docs/results.md")

A dataset is named by its file's stem. Only finished runs (status ``ok``) count; variants are
the ``prior`` column. Per dataset the table gives mean ± sd over seeds, bolds the best mean
of each metric, tests sigma against normal and deterministic on the seeds both finished, and
states in one computed sentence where sigma does and does not win.
"""

from __future__ import annotations

import io
import math
import os
import platform
import shlex
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from sigma_pyro.errors import DataError
from sigma_pyro.experiments.compare import METRICS, paired_comparison
from sigma_pyro.experiments.reporting import duration, markdown_table, mean_std, number
from sigma_pyro.experiments.tuning import (
    FINISHED_STATES,
    TUNING_METRICS,
    tuning_provenance,
    tuning_summary,
)
from sigma_pyro.runtime.checkpoint import atomic_write_bytes

SUBJECT = "sigma"
REFERENCES = ("normal", "deterministic")
ORDER = (SUBJECT, *REFERENCES)
ALPHA = 0.05
DIGITS = 4
LABELS = {
    "recall@10": "Recall@10",
    "recall@20": "Recall@20",
    "ndcg@10": "NDCG@10",
    "ndcg@20": "NDCG@20",
    "mrr": "MRR",
}
NUMERIC = (*METRICS, "epochs", "wall_seconds")
REQUIRED = ("prior", "seed", "status", *NUMERIC, "stopped_early", "code")
NO_PAIRS = "n/a: no paired seeds"


# -- loading ------------------------------------------------------------------------------------


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: no such results file")
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path}: not a results CSV ({reason})") from None


def _numbers(path: Path, frame: pd.DataFrame, column: str, rows: pd.Series) -> pd.Series:
    """``column`` as floats; every selected row must hold a finite number, since a blank or
    garbled metric of a finished run would otherwise silently drop out of the means."""
    values = pd.to_numeric(frame[column], errors="coerce").astype(float)
    bad = rows & ~values.map(math.isfinite)
    if bad.any():
        row = int(bad.idxmax())
        raw = frame[column][row]
        shown = "empty" if pd.isna(raw) else repr(raw)
        raise DataError(f"{path}: row {row + 1}: {column} is not a number ({shown})")
    return values


def _load_one(path: Path) -> pd.DataFrame:
    frame = _read_csv(path)
    missing = [column for column in REQUIRED if column not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; expected the "
            "results.csv that `sigma-pyro compare` writes"
        )
    frame["status"] = frame["status"].astype(str)
    frame["prior"] = frame["prior"].astype(str)
    ok = frame["status"] == "ok"
    for column in NUMERIC:
        frame[column] = _numbers(path, frame, column, ok)
    seeds = _numbers(path, frame, "seed", pd.Series(True, index=frame.index))
    fractional = seeds != seeds.round()
    if fractional.any():
        raise DataError(f"{path}: row {int(fractional.idxmax()) + 1}: seed is not an integer")
    frame["seed"] = seeds.astype(int)
    # Pairing by seed needs one finished run per (variant, seed).
    twice = frame[ok].duplicated(["prior", "seed"])
    if twice.any():
        row = frame[ok][twice].iloc[0]
        raise DataError(
            f"{path}: {row['prior']} seed {row['seed']} is recorded as finished more than once"
        )
    frame["stopped_early"] = frame["stopped_early"].astype(str).str.lower() == "true"
    frame["code"] = frame["code"].fillna("unknown").astype(str)
    return frame.assign(dataset=path.stem)


def load_results(paths: Sequence[str | Path]) -> pd.DataFrame:
    """The runs of every file, with a ``dataset`` column (the file's stem)."""
    if not paths:
        raise DataError("no results files given")
    frames, seen = [], {}
    for path in map(Path, paths):
        if path.stem in seen:
            raise DataError(f"{path}: dataset {path.stem} already read from {seen[path.stem]}")
        seen[path.stem] = path
        frames.append(_load_one(path))
    return pd.concat(frames, ignore_index=True)


def load_tuning(paths: Sequence[str | Path]) -> dict[str, pd.DataFrame]:
    """The ``tuning.csv`` of ``sigma-pyro tune`` per dataset (the file's stem)."""
    tables = {}
    for path in map(Path, paths):
        if path.stem in tables:
            raise DataError(f"{path}: tuning of {path.stem} given twice")
        frame = _read_csv(path)
        required = (
            "number",
            "state",
            "criterion",
            "best_epoch",
            "epochs",
            "wall_seconds",
            *TUNING_METRICS,
        )
        missing = [column for column in required if column not in frame.columns]
        if missing:
            raise DataError(
                f"{path}: missing column(s) {', '.join(missing)}; expected the "
                "tuning.csv that `sigma-pyro tune` writes"
            )
        frame["state"] = frame["state"].astype(str)
        # A pruned trial holds the metrics of its best epoch before the pruner stopped it.
        scored = frame["state"].isin(FINISHED_STATES)
        for column in (*TUNING_METRICS, "best_epoch", "epochs", "wall_seconds"):
            frame[column] = _numbers(path, frame, column, scored)
        for column in ("code", "command", "retry_of", "error"):
            if column not in frame.columns:
                frame[column] = None
        tables[path.stem] = frame
    return tables


# -- rendering ----------------------------------------------------------------------------------


def _variants(ok: pd.DataFrame) -> list[str]:
    present = list(dict.fromkeys(ok["prior"]))
    return [v for v in ORDER if v in present] + [v for v in present if v not in ORDER]


def _best(ok: pd.DataFrame, variants: list[str], metric: str) -> set[str]:
    """The variants whose mean, as printed, is the highest: ties share the bold."""
    means = {v: round(ok.loc[ok["prior"] == v, metric].mean(), DIGITS) for v in variants}
    top = max(means.values())
    return {v for v, mean in means.items() if mean == top}


def _mean_sd(values: pd.Series) -> str:
    if len(values) < 2:
        return f"{number(values.mean(), DIGITS)} ± –"
    return mean_std(values, DIGITS)


def _epochs(runs: pd.DataFrame) -> str:
    text = f"{runs['epochs'].mean():.1f}"
    capped = int((~runs["stopped_early"]).sum())
    # A run that hit the epoch limit did not early-stop: its epochs understate the count.
    return text + (f" ({capped} of {len(runs)} hit the epoch limit)" if capped else "")


def _metrics_table(ok: pd.DataFrame, variants: list[str]) -> str:
    best = {metric: _best(ok, variants, metric) for metric in METRICS}
    rows = []
    for variant in variants:
        runs = ok[ok["prior"] == variant]
        cells = [
            f"**{_mean_sd(runs[m])}**" if variant in best[m] else _mean_sd(runs[m]) for m in METRICS
        ]
        rows.append(
            [variant, len(runs), *cells, _epochs(runs), duration(runs["wall_seconds"].mean())]
        )
    header = ["variant", "seeds", *(LABELS[m] for m in METRICS), "epochs", "wall time / run"]
    return markdown_table(header, rows)


def _p(value: float) -> str:
    return "< 0.001" if value < 0.001 else number(value, 3)


def _paired(runs: pd.DataFrame, reference: str) -> dict[str, dict]:
    return {m: paired_comparison(runs, m, SUBJECT, reference) for m in METRICS}


def _paired_table(runs: pd.DataFrame) -> str:
    rows = []
    for reference in REFERENCES:
        results = _paired(runs, reference)
        pairs = results[METRICS[0]]["pairs"]
        cells = [
            cell
            for r in results.values()
            for cell in (number(r["difference"], DIGITS, signed=True), _p(r["p"]))
        ]
        rows.append([f"{SUBJECT} − {reference}", pairs if pairs else NO_PAIRS, *cells])
    header = ["paired difference", "seeds"]
    for metric in METRICS:
        header += [f"Δ {LABELS[metric]}", "p"]
    return markdown_table(header, rows)


def _names(metrics: list[str]) -> str:
    labels = [LABELS[m] for m in metrics]
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def _wins(ok: pd.DataFrame, variants: list[str]) -> str:
    best = {metric: _best(ok, variants, metric) for metric in METRICS}
    won = [m for m in METRICS if SUBJECT in best[m]]
    text = (
        f"{SUBJECT} has the best mean on {len(won)} of {len(METRICS)} metrics among "
        f"{len(variants)} variants"
    )
    lost = [f"{LABELS[m]} (best: {', '.join(sorted(best[m]))})" for m in METRICS if m not in won]
    return text + (f"; it does not win {', '.join(lost)}" if lost else "")


def _tests(runs: pd.DataFrame, variants: list[str], reference: str) -> str:
    if reference not in variants:
        return f"there are no finished {reference} runs to test against"
    results = _paired(runs, reference)
    pairs = results[METRICS[0]]["pairs"]
    if pairs == 0:
        return f"{NO_PAIRS} with {reference}, so no test against it"
    if pairs == 1:
        return f"a single seed paired with {reference} is too few to test a difference"
    significant = [m for m, r in results.items() if r["p"] < ALPHA]
    if not significant:
        return f"no difference to {reference} is significant at p < {ALPHA} ({pairs} paired seeds)"
    better = [m for m in significant if results[m]["difference"] > 0]
    worse = [m for m in significant if results[m]["difference"] < 0]
    parts = ([f"better on {_names(better)}"] if better else []) + (
        [f"worse on {_names(worse)}"] if worse else []
    )
    rest = len(METRICS) - len(significant)
    return (
        f"against {reference} ({pairs} paired seeds) {SUBJECT} is significantly "
        f"{' and '.join(parts)} at p < {ALPHA}"
        + (f", with no significant difference on the other {rest}" if rest else "")
    )


def verdict(runs: pd.DataFrame) -> str:
    """One sentence, from the numbers, on where sigma wins and, plainly, where it does not."""
    ok = runs[runs["status"] == "ok"]
    variants = _variants(ok)
    if SUBJECT not in variants:
        return f"There are no finished {SUBJECT} runs, so nothing can be said about {SUBJECT}."
    if len(variants) == 1:
        return f"Only {SUBJECT} has finished runs: there is nothing to compare it with."
    clauses = [_wins(ok, variants), *(_tests(runs, variants, r) for r in REFERENCES)]
    return "; ".join(clauses) + "."


def _tuning_section(table: pd.DataFrame) -> str:
    return (
        "### Settings tried on validation\n\nsigma trained once per trial, on one seed, with "
        "the settings shown in place of the preset's; the test split was not scored. The "
        "trials, as run:\n\n" + tuning_provenance(table) + "\n\n" + tuning_summary(table)
    )


def _dataset_section(runs: pd.DataFrame, tuning: pd.DataFrame | None = None) -> str:
    ok = runs[runs["status"] == "ok"]
    parts = (
        [verdict(runs), _metrics_table(ok, _variants(ok)), _paired_table(runs)]
        if len(ok)
        else ["No finished runs."]
    )
    failed = runs[runs["status"] != "ok"]
    if len(failed):
        parts.append(
            "Failed runs, left out above:\n\n"
            + "\n".join(
                f"- {row.prior} seed {row.seed}: {row.status}" for row in failed.itertuples()
            )
        )
    if tuning is not None:
        parts.append(_tuning_section(tuning))
    return "\n\n".join(parts) + "\n"


def _provenance(results: pd.DataFrame, command: str, machine: str) -> str:
    ok = results[results["status"] == "ok"]
    codes = ok.groupby("code", sort=True)["dataset"]
    code_lines = [
        f"  - `{code}`: {len(runs)} runs ({', '.join(dict.fromkeys(runs))})" for code, runs in codes
    ]
    return (
        "\n".join(
            [
                "Regenerate this file from the raw runs with:",
                "",
                f"    {command}",
                "",
                (
                    "The `sigma-pyro compare` command that trained each dataset's runs, with its "
                    "epoch budget and patience, is in results/README.md."
                ),
                "",
                (
                    f"- machine: {machine} (the machine that generated this file; results.csv "
                    "does not record where each run trained)"
                ),
                "- code the runs trained with (the `code` column of each run):",
                *(code_lines or ["  - none: no finished runs"]),
                (
                    f"- runs: {len(ok)} finished, {len(results) - len(ok)} failed; total training "
                    f"wall time of the finished runs {duration(ok['wall_seconds'].sum())}"
                ),
            ]
        )
        + "\n"
    )


NOTES = f"""## How to read the tables

- Each cell is the mean ± the sample standard deviation (ddof = 1) over seeds of the test
  metric; "–" where a variant has a single seed. The best mean of each metric column, as
  printed, is in **bold** (ties are all bold).
- epochs: epochs run until early stopping, mean over seeds; wall time / run: training
  time of one run, mean over seeds.
- Δ: mean over the seeds both variants finished of ({SUBJECT} − other); p: two-sided paired
  t-test (scipy.stats.ttest_rel) over those seeds, n/a with fewer than two pairs or
  identical differences. The p-values are not corrected for testing {len(METRICS)} metrics
  against {len(REFERENCES)} variants. With two seeds the test has one degree of freedom:
  two nearly equal differences give a small p from a variance estimated on two numbers, so
  read such a p as weak evidence.
- Settings tried on validation: `sigma-pyro tune` trains each trial once, on one seed, so
  a validation difference smaller than the seed-to-seed sd of the table above is not
  evidence that the settings help.
"""


def render_results(
    results: pd.DataFrame, command: str, machine: str, tuning: dict[str, pd.DataFrame] | None = None
) -> str:
    """The Markdown of ``docs/results.md`` for the runs of :func:`load_results` and the
    tuning trials of :func:`load_tuning`."""
    tuning = tuning or {}
    text = io.StringIO()
    text.write(
        "# Results\n\nGenerated by `sigma-pyro results` from the runs of "
        "`sigma-pyro compare`; do not edit by hand.\n\n"
    )
    text.write(_provenance(results, command, machine))
    for dataset, runs in results.groupby("dataset", sort=False):
        text.write(f"\n## {dataset}\n\n{_dataset_section(runs, tuning.get(dataset))}")
    text.write("\n" + NOTES)
    return text.getvalue()


def machine_description() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, {gpu}"


def write_results(
    paths: Sequence[str | Path], out: str | Path, tuning_paths: Sequence[str | Path] = ()
) -> str:
    """Render the runs of ``paths`` (and the tuning trials of ``tuning_paths``, matched to
    datasets by file stem) into ``out``; returns the Markdown."""
    results = load_results(paths)
    tuning = load_tuning(tuning_paths)
    unmatched = sorted(set(tuning) - set(results["dataset"]))
    if unmatched:
        raise DataError(f"--tuning {unmatched[0]}: no results file of that dataset in --runs")
    words = ["sigma-pyro", "results", "--runs", *map(str, paths)]
    if tuning_paths:
        words += ["--tuning", *map(str, tuning_paths)]
    command = shlex.join([*words, "--out", str(out)])
    text = render_results(results, command, machine_description(), tuning)
    atomic_write_bytes(Path(out), text.encode("utf-8"))
    return text
