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
import os
import platform
import shlex
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from sigma_pyro.errors import DataError
from sigma_pyro.experiments.metrics import METRICS
from sigma_pyro.experiments.published import load_published
from sigma_pyro.experiments.reporting import duration, markdown_table, mean_std, number
from sigma_pyro.experiments.results_figure import render_results_figure
from sigma_pyro.experiments.results_files import load_results, load_tuning
from sigma_pyro.experiments.tuning_report import tuning_provenance, tuning_summary
from sigma_pyro.experiments.verdict import (
    DIGITS,
    LABELS,
    NO_PAIRS,
    REFERENCES,
    SUBJECT,
    best_variants,
    ordered_variants,
    paired_with,
    verdict,
)
from sigma_pyro.runtime.checkpoint import atomic_write_bytes


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
    best = {metric: best_variants(ok, variants, metric) for metric in METRICS}
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


def _paired_table(runs: pd.DataFrame) -> str:
    rows = []
    for reference in REFERENCES:
        results = paired_with(runs, reference)
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


def _trained_prior(table: pd.DataFrame) -> str:
    """The variant a study trained: its command's ``--prior``, else the presets' sigma."""
    for command in table["command"].dropna().astype(str):
        words = shlex.split(command)
        for word, following in zip(words, [*words[1:], ""], strict=True):
            flag, equals, value = word.partition("=")
            if flag == "--prior":
                return value if equals else following
    return SUBJECT


def _tuning_section(table: pd.DataFrame) -> str:
    return (
        f"### Settings tried on validation\n\n{_trained_prior(table)} trained once per trial, "
        "on one seed, with the settings shown in place of the preset's; the test split was not "
        "scored. The trials, as run:\n\n"
        + tuning_provenance(table)
        + "\n\n"
        + tuning_summary(table)
    )


def _published_section(ok: pd.DataFrame, published: pd.DataFrame) -> str:
    """The published numbers on this dataset's file beside sigma's mean."""
    metrics = [m for m in METRICS if m in published and published[m].notna().any()]
    ours = ok[ok["prior"] == SUBJECT]
    rows = []
    for row in published.to_dict("records"):
        cells = [row["model"], row["source"]]
        for metric in metrics:
            value = row[metric]
            gap = ours[metric].mean() - value if len(ours) else float("nan")
            cells += [number(value), number(gap, signed=True)]
        rows.append(cells)
    header = ["published", "source"]
    for metric in metrics:
        header += [LABELS[metric], f"{SUBJECT} − it"]
    return "Published on the same file (test split, full ranking):\n\n" + markdown_table(
        header, rows
    )


def _dataset_section(
    runs: pd.DataFrame,
    tuning: Sequence[pd.DataFrame] = (),
    published: pd.DataFrame | None = None,
) -> str:
    ok = runs[runs["status"] == "ok"]
    parts = (
        [verdict(runs), _metrics_table(ok, ordered_variants(ok)), _paired_table(runs)]
        if len(ok)
        else ["No finished runs."]
    )
    if published is not None and len(published):
        parts.append(_published_section(ok, published))
    failed = runs[runs["status"] != "ok"]
    if len(failed):
        parts.append(
            "Failed runs, left out above:\n\n"
            + "\n".join(
                f"- {row.prior} seed {row.seed}: {row.status}" for row in failed.itertuples()
            )
        )
    parts += [_tuning_section(table) for table in tuning]
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
    results: pd.DataFrame,
    command: str,
    machine: str,
    tuning: dict[str, list[pd.DataFrame]] | None = None,
    published: pd.DataFrame | None = None,
    figure: str | None = None,
) -> str:
    """The Markdown of ``docs/results.md`` for the runs of :func:`load_results`, the
    tuning trials of :func:`load_tuning` and the published numbers of
    :func:`~sigma_pyro.experiments.published.load_published`; ``figure`` is the figure's
    path relative to the Markdown file."""
    tuning = tuning or {}
    text = io.StringIO()
    text.write(
        "# Results\n\nGenerated by `sigma-pyro results` from the runs of "
        "`sigma-pyro compare`; do not edit by hand.\n\n"
    )
    text.write(_provenance(results, command, machine))
    if figure is not None:
        text.write(f"\n![test Recall@20 and NDCG@20 of every variant]({figure})\n")
    for dataset, runs in results.groupby("dataset", sort=False):
        mine = None if published is None else published[published["dataset"] == dataset]
        section = _dataset_section(runs, tuning.get(dataset, ()), mine)
        text.write(f"\n## {dataset}\n\n{section}")
    text.write("\n" + NOTES)
    return text.getvalue()


def machine_description() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, {gpu}"


def write_results(
    paths: Sequence[str | Path],
    out: str | Path,
    tuning_paths: Sequence[str | Path] = (),
    published_path: str | Path | None = None,
    figure_path: str | Path | None = None,
) -> str:
    """Render the runs of ``paths`` (and the tuning trials of ``tuning_paths``, matched to
    datasets by file stem or ``DATASET=PATH``, and the published numbers of
    ``published_path``) into ``out``, with the figure at ``figure_path``; returns the
    Markdown."""
    results = load_results(paths)
    tuning = load_tuning(tuning_paths)
    unmatched = sorted(set(tuning) - set(results["dataset"]))
    if unmatched:
        raise DataError(f"--tuning {unmatched[0]}: no results file of that dataset in --runs")
    published = None if published_path is None else load_published(published_path)
    words = ["sigma-pyro", "results", "--runs", *map(str, paths)]
    if tuning_paths:
        words += ["--tuning", *map(str, tuning_paths)]
    if published_path is not None:
        words += ["--published", str(published_path)]
    if figure_path is not None:
        words += ["--figure", str(figure_path)]
    command = shlex.join([*words, "--out", str(out)])
    figure = None
    if figure_path is not None:
        atomic_write_bytes(Path(figure_path), render_results_figure(results, published))
        figure = os.path.relpath(figure_path, Path(out).parent)
    text = render_results(results, command, machine_description(), tuning, published, figure)
    atomic_write_bytes(Path(out), text.encode("utf-8"))
    return text
