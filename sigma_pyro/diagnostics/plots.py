"""Figures, drawn with ArviZ and matplotlib on figures that never touch pyplot's global
state, so they render with Agg whatever backend the caller's session uses."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path

import arviz as az
import numpy as np
import xarray as xr
from arviz.stats.stats_utils import ELPDData
from matplotlib import MatplotlibDeprecationWarning
from matplotlib.figure import Figure

from sigma_pyro.diagnostics.calibration import PIT_BINS

USERS_SHOWN = 4


@contextmanager
def _quiet():
    # ArviZ 0.23's own use of matplotlib and of plot_khat's inputs warns about future
    # versions; nothing a user of these figures can act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MatplotlibDeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def plot_khat(khat: np.ndarray, user_ids: list[str], good_k: float, path: Path) -> Path:
    pareto_k = xr.DataArray(khat, dims=["user"], coords={"user": list(user_ids)})
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    with _quiet():
        az.plot_khat(
            ELPDData(data=[pareto_k, good_k], index=["pareto_k", "good_k"]),
            show_hlines=True,
            show_bins=True,
            hlines_kwargs={"hlines": [0.5, 0.7, 1.0]},
            ax=ax,
        )
    ax.set_xlabel("user")
    ax.set_title("PSIS Pareto k-hat of the guide, per user (q(z|x) as proposal for p(z|x))")
    return _save(fig, path)


def plot_forest_interests(draws, path: Path) -> Path:
    """Each component's prior weight, mean posterior responsibility and scale, spread over
    users (users take the place of draws)."""
    components = draws.mixture_weights.shape[1]
    panels = {
        "prior mixture weight": draws.mixture_weights,
        "posterior responsibility": draws.responsibility.mean(axis=1),
        "component scale": draws.component_scale,
    }
    across_users = az.from_dict(
        posterior={name: values[None] for name, values in panels.items()},
        coords={"interest": [f"component {k}" for k in range(components)]},
        dims={name: ["interest"] for name in panels},
    )
    fig = Figure(figsize=(9, 1.5 + 0.45 * components))
    ax = fig.subplots(1, len(panels), sharey=True)
    for axis, name in zip(ax, panels, strict=True):
        with _quiet():
            az.plot_forest(
                across_users,
                var_names=[name],
                combined=True,
                hdi_prob=0.9,
                ax=axis,
                textsize=9,
                labeller=az.labels.NoVarLabeller(),
            )
        axis.set_title(name, fontsize=10)
    fig.suptitle("Mixture components across users: median, 50% and 90% intervals", fontsize=10)
    return _save(fig, path)


def plot_mixture_weights(idata: az.InferenceData, path: Path) -> Path:
    """Posterior responsibilities (90% HDI over draws) beside the prior weights, for a few
    users."""
    users = list(idata.posterior["user"].values[:USERS_SHOWN])
    components = idata.posterior.sizes["interest"]
    fig = Figure(figsize=(3.2 * len(users), 1.5 + 0.5 * components))
    ax = np.atleast_1d(fig.subplots(1, len(users), sharex=True))
    for axis, user in zip(ax, users, strict=True):
        with _quiet():
            az.plot_forest(
                idata,
                var_names=["responsibility", "mixture_weights"],
                coords={"user": [user], "chain": [0]},
                combined=True,
                hdi_prob=0.9,
                ax=axis,
                textsize=8,
            )
        axis.set_title(f"user {user}", fontsize=9)
    fig.suptitle("Posterior responsibility vs prior mixture weight per component", fontsize=10)
    return _save(fig, path)


def plot_predictive_rank(calibration, summary: dict, path: Path) -> Path:
    fig = Figure(figsize=(13, 3.8))
    ax = fig.subplots(1, 3)
    ax[0].hist(calibration.normalised_rank, bins=20, range=(0, 1), color="C0", alpha=0.8)
    ax[0].set_xlabel("rank of held-out item / catalog size (history masked)")
    ax[0].set_ylabel("users")
    ax[0].set_title("Rank of the held-out item (0 = top)")
    ax[1].hist(calibration.pit, bins=PIT_BINS, range=(0, 1), color="C1", alpha=0.8)
    ax[1].axhline(
        len(calibration.pit) / PIT_BINS, color="k", ls="--", lw=1, label="calibrated (uniform)"
    )
    ax[1].set_xlabel("randomised PIT (items by predictive probability)")
    ax[1].set_title(f"PIT, KS p = {summary['pit_ks_pvalue']:.3g}")
    ax[1].legend(fontsize=8)
    rows = summary["hit_rates"]
    ks = [r["k"] for r in rows]
    ax[2].errorbar(
        ks,
        [r["expected"] for r in rows],
        yerr=[2 * r["se"] for r in rows],
        marker="o",
        capsize=3,
        label="expected (predictive mass of top K, ±2 se)",
    )
    ax[2].plot(ks, [r["observed"] for r in rows], marker="s", label="observed hit rate")
    ax[2].set_xscale("log")
    ax[2].set_xticks(ks, [str(k) for k in ks])
    ax[2].set_xlabel("K")
    ax[2].set_title("Hit rate at K")
    ax[2].legend(fontsize=8)
    return _save(fig, path)
