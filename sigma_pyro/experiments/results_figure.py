"""The figure beside docs/results.md: the main test metrics of every variant on every dataset,
mean over seeds with the seed-to-seed standard deviation as error bars, and the published
numbers on the same files as markers.

Drawn on a bare matplotlib Figure (Agg), as ``runtime/curves.py`` does, so no pyplot state
is left in the caller's process.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sigma_pyro.experiments.verdict import LABELS, ordered_variants

FIGURE_METRICS = ("recall@20", "ndcg@20")
_MARKERS = ("D", "*", "^", "v", "s", "P")


def render_results_figure(results: pd.DataFrame, published: pd.DataFrame | None = None) -> bytes:
    """PNG bytes: one panel per metric of ``FIGURE_METRICS``, datasets along x, a bar per
    variant (finished runs only), and one marker per published model where a paper
    reported that metric on that dataset."""
    ok = results[results["status"] == "ok"]
    datasets = list(dict.fromkeys(ok["dataset"]))
    variants = ordered_variants(ok)
    figure = Figure(figsize=(5 * len(FIGURE_METRICS), 3.6), layout="constrained")
    axes = figure.subplots(1, len(FIGURE_METRICS), squeeze=False).ravel()
    width = 0.8 / max(1, len(variants))
    x = np.arange(len(datasets))
    for ax, metric in zip(axes, FIGURE_METRICS, strict=True):
        for i, variant in enumerate(variants):
            runs = ok[ok["prior"] == variant].groupby("dataset")[metric]
            means = runs.mean().reindex(datasets)
            spread = runs.std(ddof=1).reindex(datasets).fillna(0.0)
            seeds = runs.count().reindex(datasets).fillna(0).astype(int)
            ax.bar(
                x + (i - (len(variants) - 1) / 2) * width,
                means.to_numpy(),
                width,
                yerr=spread.to_numpy(),
                capsize=3,
                label=f"{variant} (seeds: {', '.join(map(str, seeds))})",
            )
        if published is not None and metric in published:
            _published_markers(ax, published, datasets, metric)
        ax.set_xticks(x, datasets, fontsize=8)
        ax.set_title(f"test {LABELS[metric]}, mean ± sd over seeds", fontsize=9)
        ax.legend(fontsize=6)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def _published_markers(ax, published: pd.DataFrame, datasets: list[str], metric: str) -> None:
    rows = published[published["dataset"].isin(datasets) & published[metric].notna()]
    for marker, (model, group) in zip(_MARKERS, rows.groupby("model", sort=False), strict=False):
        ax.scatter(
            [datasets.index(d) for d in group["dataset"]],
            group[metric],
            marker=marker,
            color="black",
            zorder=3,
            label=f"{model} (published)",
        )
