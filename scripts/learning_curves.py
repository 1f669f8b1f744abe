"""Learning curves of named configurations trained side by side, for docs/tuning.md.

Each variant is a string of training flags added to the common ones; every variant trains
for the same number of epochs without early stopping, and each epoch's training loss per
token, the monitoring batch's NLL and the validation metrics are written to
``OUT/curves.csv`` with the optimiser step and the wall time, then plotted against both in
``OUT/curves.png``. A variant already complete in the CSV is skipped, so an interrupted run
continues with the next one.

    .venv/bin/python scripts/learning_curves.py --data ../shared/data/Beauty.txt \
        --preset beauty --epochs 6 --common "--prior deterministic --batch-size 32" \
        --variant before="--decoder-input-dropout 0.5" --variant after="" \
        --out results/tuning/curves-beauty
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import pandas as pd

from sigma_pyro.api import SigmaRecommender
from sigma_pyro.cli.commands.common import add_config_flags, config_overrides
from sigma_pyro.config import SECTIONS, load_config
from sigma_pyro.errors import SigmaPyroError

METRICS = ("ndcg@20", "recall@20")


def variant_overrides(flags: str) -> dict:
    parser = argparse.ArgumentParser(prog="variant", exit_on_error=False)
    add_config_flags(parser, tuple(SECTIONS))
    try:
        return config_overrides(parser.parse_args(shlex.split(flags)))
    except (argparse.ArgumentError, SystemExit) as err:
        raise SigmaPyroError(f"--variant/--common {flags!r}: not training flags ({err})") from None


def train_variant(name: str, flags: str, args) -> pd.DataFrame:
    overrides = variant_overrides(f"{args.common} {flags}")
    train = overrides.setdefault("train", {})
    train.update(epochs=args.epochs, patience=0, progress=False, early_stop_metric="ndcg@20")
    if args.data:
        overrides.setdefault("data", {})["path"] = args.data
    recommender = SigmaRecommender(load_config(args.preset, overrides))
    summary = recommender.fit(
        log=lambda line: print(f"[{name}] {line}", file=sys.stderr, flush=True)
    )
    rows, elapsed = [], 0.0
    for record in summary.history:
        elapsed += record.seconds
        rows.append(
            {
                "variant": name,
                "flags": flags.strip(),
                "epoch": record.epoch,
                "step": record.step,
                "seconds": elapsed,
                "train_loss": record.loss,
                "monitor_nll": record.terms.get("nll", float("nan")),
                **{f"valid_{m}": record.valid[m] for m in METRICS},
            }
        )
    return pd.DataFrame(rows)


def plot(curves: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharey="row")
    for name, group in curves.groupby("variant", sort=False):
        for col, x in enumerate(("step", "seconds")):
            axes[0, col].plot(group[x], group["train_loss"], marker="o", label=name)
            axes[1, col].plot(group[x], group["valid_ndcg@20"], marker="o", label=name)
    for col, x in enumerate(("optimiser steps", "wall seconds (this machine)")):
        axes[1, col].set_xlabel(x)
    axes[0, 0].set_ylabel("training loss per token")
    axes[1, 0].set_ylabel("validation NDCG@20")
    axes[0, 0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="interaction file (default: the preset's data)")
    parser.add_argument("--preset", default=None)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--common", default="", help="flags every variant trains with")
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=FLAGS")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        variants = dict(v.split("=", 1) if "=" in v else (v, "") for v in args.variant)
        args.out.mkdir(parents=True, exist_ok=True)
        csv = args.out / "curves.csv"
        curves = pd.read_csv(csv) if csv.is_file() else pd.DataFrame()
        for name, flags in variants.items():
            done = curves[curves["variant"] == name] if len(curves) else curves
            if len(done) >= args.epochs:
                print(f"[{name}] complete in {csv}, skipped", file=sys.stderr)
                continue
            curves = pd.concat(
                [
                    curves[curves["variant"] != name] if len(curves) else curves,
                    train_variant(name, flags, args),
                ],
                ignore_index=True,
            )
            tmp = csv.with_suffix(".tmp")
            curves.to_csv(tmp, index=False)
            tmp.replace(csv)
        plot(curves, args.out / "curves.png")
        last = curves.sort_values("epoch").groupby("variant", sort=False).last()
        print(
            last[["step", "seconds", "train_loss", "valid_ndcg@20", "valid_recall@20"]].to_string(
                float_format=lambda v: f"{v:.4f}"
            )
        )
    except SigmaPyroError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
