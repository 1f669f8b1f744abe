"""``curves.png``: a run's loss terms and validation metrics against epochs.

Drawn on a bare matplotlib Figure (Agg), not through pyplot: no global backend or open
figure is left behind in the caller's process, which may be a notebook.
"""

from __future__ import annotations

import io
import math

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

_COLUMNS = 3
# The ELBO terms differ by orders of magnitude (a penalty of 1e-4 beside an NLL of 5), so
# each gets its own panel; the validation metrics share one, all being in [0, 1].
_TITLES = {
    "nll": "next-item NLL per token",
    "kl_z": "KL of z per token",
    "interest_nll": "interest-head NLL per scored position",
}


def render_curves(history: pd.DataFrame, best_epoch: int | None, metric: str) -> bytes:
    """PNG bytes of one panel per loss term and one of the validation metrics, with the
    best epoch (by validation ``metric``) marked on each."""
    terms = [c for c in history.columns if c.startswith("term_") and c != "term_loss"]
    panels = 3 + len(terms)
    rows = math.ceil(panels / _COLUMNS)
    figure = Figure(figsize=(4 * _COLUMNS, 3 * rows), layout="constrained")
    axes = figure.subplots(rows, _COLUMNS, squeeze=False).ravel()
    epochs = history["epoch"]
    loss = axes[0]
    loss.plot(epochs, history["loss"], marker=".", label="training (epoch mean)")
    if "term_loss" in history:
        loss.plot(epochs, history["term_loss"], marker=".", label="monitoring batch")
    loss.set_title("annealed negative ELBO per token")
    loss.legend(fontsize=7)
    for ax, column in zip(axes[1:], terms, strict=False):
        name = column.removeprefix("term_")
        ax.plot(epochs, history[column], marker=".")
        ax.set_title(_TITLES.get(name, f"{name} (weighted, per token)"))
    _schedule(axes[len(terms) + 1], history)
    _validation(axes[len(terms) + 2], history, best_epoch, metric)
    for ax in axes[:panels]:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if best_epoch is not None:
            ax.axvline(best_epoch, color="0.5", linestyle="--", linewidth=1)
    for ax in axes[panels:]:
        ax.set_visible(False)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _schedule(ax, history: pd.DataFrame) -> None:
    ax.plot(history["epoch"], history["beta"], marker=".", label="beta (KL of z)")
    ax.plot(history["epoch"], history["interest_weight"], marker=".", label="interest weight")
    # beta starts orders of magnitude below the interest weight.
    ax.set_yscale("log")
    ax.set_title("weights of the annealed terms")
    ax.legend(fontsize=7)


def _validation(ax, history: pd.DataFrame, best_epoch: int | None, metric: str) -> None:
    """NDCG at each cut-off and the early-stopping metric; the other metrics move with
    them and would crowd the panel (history.csv has them all)."""
    for column in history.columns:
        name = column.removeprefix("interest_valid_").removeprefix("valid_")
        if name == column or not (name.startswith("ndcg@") or name == metric):
            continue
        interest = column.startswith("interest_")
        ax.plot(
            history["epoch"],
            history[column],
            marker=".",
            linestyle=":" if interest else "-",
            label=f"interest head {name}" if interest else name,
        )
    title = "validation"
    if best_epoch is not None:
        title += f" (dashed: best epoch {best_epoch})"
    ax.set_title(title)
    ax.legend(fontsize=7)
