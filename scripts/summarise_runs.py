"""Summarise a folder of `sigma-pyro train` runs, one model folder per run.

    .venv/bin/python scripts/summarise_runs.py runs/positions-beauty \
        --out results/tuning/positions-beauty

Each run is RUNS/<variant> or RUNS/<variant>-seed<N>. From its history.csv (final after
every epoch, so a run still going is summarised as far as it got) and metrics.json
(written when it ends: test metrics at the best validation epoch) this writes to OUT:
runs.csv (one row a run), variants.csv (mean and standard deviation over the seeds of
each variant), curves.csv and curves.png (training loss and validation NDCG@20 against
optimiser steps).

Several folders may be given; ``LABEL=RUNS`` names its variants ``<variant>@LABEL``, so
that two grids of the same variants (``sigma-pyro compare`` with two settings) sit side by
side. A `compare` run folder has no metrics.json: ``--compare CSV`` (its grid's
results.csv) supplies the test metrics of the runs it lists. ``--earlier CSV`` adds the
rows of an earlier runs.csv whose run folders are gone (a folder's own row wins over an
earlier one of the same variant and seed; earlier runs have no curves here). ``--paired
BASE`` (more than once for several bases) also writes paired.csv: every other variant
against BASE over the seeds both finished, the mean difference and the paired t-test's
p-value of validation and test NDCG@20 and test Recall@20.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import matplotlib
import pandas as pd

from sigma_pyro.experiments.metrics import paired_comparison

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TEST_METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")
PAIRED_METRICS = ("valid_ndcg@20", "test_ndcg@20", "test_recall@20")
CURVE_COLUMNS = ["variant", "seed", "epoch", "step", "seconds", "loss", "valid_ndcg@20"]


def run_name(folder: Path) -> tuple[str, int]:
    match = re.fullmatch(r"(.+)-seed(\d+)", folder.name)
    return (match[1], int(match[2])) if match else (folder.name, 0)


def compare_tests(path: Path) -> dict[Path, dict]:
    """Run folder -> test metrics, from the results.csv of a `sigma-pyro compare` grid."""
    rows = pd.read_csv(path)
    ok = rows[rows["status"] == "ok"]
    return {
        (path.parent / row["run_dir"]).resolve(): {m: row[m] for m in TEST_METRICS}
        for row in ok.to_dict("records")
    }


def summarise(
    folder: Path, label: str | None, tests: dict[Path, dict]
) -> tuple[dict, pd.DataFrame]:
    variant, seed = run_name(folder)
    variant = variant if label is None else f"{variant}@{label}"
    history = pd.read_csv(folder / "history.csv").assign(variant=variant, seed=seed)
    best = history.loc[history["valid_ndcg@20"].idxmax()]
    row = {
        "variant": variant,
        "seed": seed,
        "epochs_run": int(history["epoch"].max()),
        "best_epoch": int(best["epoch"]),
        "best_step": int(best["step"]),
        "valid_ndcg@20": best["valid_ndcg@20"],
        "valid_recall@20": best["valid_recall@20"],
        "finished": (folder / "metrics.json").is_file(),
    }
    if row["finished"]:
        metrics = json.loads((folder / "metrics.json").read_text())["test"]
    else:
        metrics = tests.get(folder.resolve())
        row["finished"] = metrics is not None
    if row["finished"]:
        row.update({f"test_{m}": metrics[m] for m in TEST_METRICS})
    return row, history[CURVE_COLUMNS]


def plot(curves: pd.DataFrame, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for (variant, seed), group in curves.groupby(["variant", "seed"]):
        label = variant if curves["seed"].nunique() == 1 else f"{variant} seed {seed}"
        axes[0].plot(group["step"], group["loss"], label=label)
        axes[1].plot(group["step"], group["valid_ndcg@20"], label=label)
    axes[0].set_ylabel("training loss per token")
    axes[1].set_ylabel("validation NDCG@20")
    for axis in axes:
        axis.set_xlabel("optimiser steps")
    axes[1].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def paired(runs: pd.DataFrame, base: str) -> pd.DataFrame:
    """Each variant against ``base`` over the seeds both finished, on the metrics the runs
    hold (folders without a metrics.json, such as those of `sigma-pyro compare`, have no
    test columns)."""
    results = runs.rename(columns={"variant": "prior"}).assign(
        status=lambda frame: frame["finished"].map({True: "ok", False: "running"})
    )
    return pd.DataFrame(
        {"variant": variant, "base": base, "metric": metric}
        | paired_comparison(results, metric, variant, reference=base)
        for variant in sorted(set(runs["variant"]) - {base})
        for metric in PAIRED_METRICS
        if metric in runs
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="[LABEL=]RUNS")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--earlier", type=Path, action="append", default=[], metavar="CSV")
    parser.add_argument("--compare", type=Path, action="append", default=[], metavar="CSV")
    parser.add_argument("--paired", action="append", default=[], metavar="BASE")
    args = parser.parse_args(argv)
    for flag, paths in (("--earlier", args.earlier), ("--compare", args.compare)):
        for path in paths:
            if not path.is_file():
                parser.error(f"{flag} {path}: no such file")
    tests = {}
    for path in args.compare:
        try:
            tests.update(compare_tests(path))
        except KeyError as missing:
            parser.error(f"--compare {path}: not a compare results.csv (no column {missing})")
    folders = []
    for given in args.runs:
        label, _, runs = given.rpartition("=")
        found = sorted(p for p in Path(runs).glob("*") if (p / "history.csv").is_file())
        if not found:
            parser.error(f"{runs}: no run folder with a history.csv")
        folders += [(folder, label or None) for folder in found]
    rows, curves = zip(*(summarise(f, label, tests) for f, label in folders), strict=True)
    runs = pd.concat([pd.DataFrame(rows), *(pd.read_csv(path) for path in args.earlier)])
    runs = runs.drop_duplicates(["variant", "seed"]).sort_values(["variant", "seed"])
    for base in args.paired:
        if base not in set(runs["variant"]):
            parser.error(f"--paired {base}: no such variant")
    numeric = [c for c in runs.columns if c.startswith(("valid_", "test_"))]
    variants = runs.groupby("variant")[numeric].agg(["mean", "std"])
    variants.columns = [f"{metric}_{stat}" for metric, stat in variants.columns]
    variants.insert(0, "seeds", runs.groupby("variant").size())
    args.out.mkdir(parents=True, exist_ok=True)
    runs.to_csv(args.out / "runs.csv", index=False, float_format="%.4f")
    variants.to_csv(args.out / "variants.csv", float_format="%.4f")
    frame = pd.concat(curves, ignore_index=True)
    frame.to_csv(args.out / "curves.csv", index=False, float_format="%.5g")
    plot(frame, args.out / "curves.png")
    if args.paired:
        table = pd.concat([paired(runs, base) for base in args.paired], ignore_index=True)
        table.to_csv(args.out / "paired.csv", index=False, float_format="%.4g")
    print(runs.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
