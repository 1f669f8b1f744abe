"""ArviZ InferenceData of the guide's draws, one chain per model (a model's draws are
independent, so chains differ only when several independently trained seeds are compared).

Groups: ``posterior`` (z and, when present, the interest vectors at the last position, the
prior mixture weights, which the history fixes and so repeat across draws, and each draw's
posterior responsibilities), ``posterior_predictive`` (a next item drawn from each z),
``log_likelihood`` (log p(held-out | history, z)), ``observed_data`` (the held-out item),
``sample_stats`` (log p(x, z), log q(z | x), the log importance weight and the Monte Carlo KL
at the last position) and ``user_diagnostics`` (per chain and user: Pareto k-hat, held-out
log-likelihoods, KL per dimension, rank and PIT of the held-out item, component scales and
separation).
Items are internal ids 1..N: ``model.json``'s ``items[id - 1]`` is the raw id.
"""

from __future__ import annotations

import logging
import warnings

import arviz as az
import numpy as np
import xarray as xr

from sigma_pyro.diagnostics.mixture import effective_components


def _draw_major(arrays: list[np.ndarray]) -> np.ndarray:
    """Per-model [U, S, ...] arrays -> [chain, draw, user, ...]."""
    return np.stack([np.swapaxes(a, 0, 1) for a in arrays])


def build_inference_data(
    draws: list, psis: list, user_ids: list[str], held_out: np.ndarray, attrs: dict
) -> az.InferenceData:
    first = draws[0]
    coords = {"user": list(user_ids), "latent": np.arange(first.latent_dim)}
    if first.mixture_weights is not None:
        coords["interest"] = np.arange(first.mixture_weights.shape[1])
    posterior, dims = _posterior(draws)
    idata = az.from_dict(
        posterior=posterior,
        posterior_predictive={"next_item": _draw_major([d.predicted for d in draws])},
        log_likelihood={"next_item": _draw_major([d.heldout_loglik for d in draws])},
        observed_data={"next_item": np.asarray(held_out)},
        sample_stats={
            "lp": _draw_major([d.log_joint for d in draws]),
            "log_q": _draw_major([d.log_guide for d in draws]),
            "log_weight": _draw_major([d.log_weight for d in draws]),
            "kl_last": _draw_major([d.kl_last for d in draws]),
        },
        coords=coords,
        dims=dims,
        attrs=attrs,
    )
    extra = _user_diagnostics(draws, psis, coords)
    with warnings.catch_warnings():
        # "user_diagnostics" is not one of ArviZ's schema groups; it round-trips all the same.
        warnings.simplefilter("ignore", UserWarning)
        idata.add_groups(user_diagnostics=extra)
    return idata


def _posterior(draws: list) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """The posterior group's variables, [chain, draw, user, ...], and every group's dims."""
    first = draws[0]
    dims = {
        "z": ["user", "latent"],
        "next_item": ["user"],
        "lp": ["user"],
        "log_q": ["user"],
        "log_weight": ["user"],
        "kl_last": ["user"],
    }
    posterior = {"z": _draw_major([d.z for d in draws])}
    if first.mixture_weights is not None:
        samples = first.z.shape[1]
        posterior["mixture_weights"] = _draw_major(
            [np.repeat(d.mixture_weights[:, None], samples, axis=1) for d in draws]
        )
        posterior["responsibility"] = _draw_major([d.responsibility for d in draws])
        dims["mixture_weights"] = dims["responsibility"] = ["user", "interest"]
    return posterior, dims


def _user_diagnostics(draws: list, psis: list, coords: dict) -> xr.Dataset:
    """Per chain and user: PSIS k-hat, held-out log-likelihoods, KL per dimension, rank and
    PIT of the held-out item and, for a mixture prior, component scales and separation."""
    per_user = {
        "khat": [p.khat for p in psis],
        "khat_history": [p.khat_history for p in psis],
        "loglik_plain": [p.loglik_plain for p in psis],
        "loglik_guide": [p.loglik_guide for p in psis],
        "loglik_psis": [p.loglik_psis for p in psis],
        "kl_per_dim": [d.kl_last.mean(axis=1) / d.latent_dim for d in draws],
        "rank": [d.calibration.rank for d in draws],
        "pit": [d.calibration.pit for d in draws],
    }
    variables = {name: (("chain", "user"), np.stack(values)) for name, values in per_user.items()}
    if draws[0].component_scale is not None:
        variables["component_scale"] = (
            ("chain", "user", "interest"),
            np.stack([d.component_scale for d in draws]),
        )
        variables["component_separation"] = (
            ("chain", "user"),
            np.stack([d.component_separation for d in draws]),
        )
    return xr.Dataset(
        variables,
        coords={
            "chain": np.arange(len(draws)),
            **{k: v for k, v in coords.items() if k in ("user", "interest")},
        },
    )


def build_run_data(draws: list, chain_names: list[str]) -> az.InferenceData:
    """Run-level quantities per draw (averaged over users), one chain per model, all
    invariant to relabelling latent dimensions or components, so seeds are comparable."""
    quantities = {
        "heldout_loglik": [d.heldout_loglik.mean(axis=0) for d in draws],
        "kl_per_dim": [d.kl_last.mean(axis=0) / d.latent_dim for d in draws],
    }
    if draws[0].responsibility is not None:
        shares = [d.responsibility.mean(axis=0) for d in draws]  # [S, K]
        quantities["effective_components"] = [
            np.array([effective_components(row) for row in s]) for s in shares
        ]
        quantities["largest_component_share"] = [s.max(axis=1) for s in shares]
    return az.from_dict(
        posterior={k: np.stack(v) for k, v in quantities.items()},
        attrs={"chains": "; ".join(chain_names)},
    )


def run_summary(runs: az.InferenceData):
    """``az.summary`` of the run-level quantities. With one model R-hat is NaN, which the
    report explains, so ArviZ's warning about having a single chain is silenced."""
    logger = logging.getLogger("arviz")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return az.summary(runs, kind="all", round_to="none")
    finally:
        logger.setLevel(level)
