"""Summarise the position-encoding runs of docs/tuning.md from their model folders.

    .venv/bin/python results/tuning/positions-beauty/summarise.py runs/positions-beauty

reads RUNS/<encoding>/metrics.json and history.csv (written by `sigma-pyro train`, also
while a run is still going, when only history.csv is final) and writes summary.csv (best
validation epoch, its test metrics) and curves.csv and curves.png (validation NDCG@20 and
training loss against optimiser steps) beside this script.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")


def main(runs: Path) -> None:
    summary, curves = [], []
    for folder in sorted(p for p in runs.iterdir() if (p / "history.csv").is_file()):
        history = pd.read_csv(folder / "history.csv").assign(encoding=folder.name)
        curves.append(
            history[
                ["encoding", "epoch", "step", "seconds", "loss", "valid_ndcg@20", "valid_recall@20"]
            ]
        )
        best = history.loc[history["valid_ndcg@20"].idxmax()]
        row = {
            "encoding": folder.name,
            "epochs_run": int(history["epoch"].max()),
            "best_epoch": int(best["epoch"]),
            "best_step": int(best["step"]),
            "valid_ndcg@20": best["valid_ndcg@20"],
            "valid_recall@20": best["valid_recall@20"],
            "finished": (folder / "metrics.json").is_file(),
        }
        if row["finished"]:
            metrics = json.loads((folder / "metrics.json").read_text())
            row.update({f"test_{m}": metrics["test"][m] for m in METRICS})
            row["stopped_early"] = metrics["stopped_early"]
        summary.append(row)
    table = pd.DataFrame(summary)
    table.to_csv(HERE / "summary.csv", index=False, float_format="%.4f")
    frame = pd.concat(curves, ignore_index=True)
    frame.to_csv(HERE / "curves.csv", index=False, float_format="%.5g")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, group in frame.groupby("encoding"):
        axes[0].plot(group["step"], group["loss"], label=name)
        axes[1].plot(group["step"], group["valid_ndcg@20"], label=name)
    axes[0].set_ylabel("training loss per token")
    axes[1].set_ylabel("validation NDCG@20")
    for axis in axes:
        axis.set_xlabel("optimiser steps")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(HERE / "curves.png", dpi=120)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
