"""The verdicts of ``report.md``: each diagnostic's health in one sentence, with the numbers
that decide it."""

from __future__ import annotations

import math

import numpy as np

RHAT_LIMIT = 1.01
# The guide is "much narrower" than the prior below this ratio of standard deviations.
NARROW_RATIO = 0.5


def pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def num(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.0f}"


def psis_verdict(psis: dict, guide_scale: float, prior_scale: float, kl_weight: float) -> str:
    share = psis["share_above_0.7"]
    median = psis["khat_quantiles"]["median"]
    if share <= 0.1 and median <= psis["good_k"]:
        return (
            f"**Healthy.** The guide is a reliable importance proposal for the posterior: "
            f"median k-hat {num(median)}, {pct(share)} of users above 0.7."
        )
    narrow = guide_scale < NARROW_RATIO * prior_scale
    reason = (
        f" Its draws are much narrower than the prior (sd of z {num(guide_scale)} "
        f"against the prior's {num(prior_scale)}): trained with a KL weight of "
        f"{num(kl_weight)} per token instead of 1, the guide is not meant to "
        f"match the unannealed posterior, which importance sampling measures."
        if narrow
        else ""
    )
    if share >= 0.5:
        return (
            f"**Unhealthy.** For {pct(share)} of users k-hat exceeds 0.7 (median "
            f"{num(median)}): q(z | x) misses posterior mass, so its draws and any "
            f"importance-weighted estimate from them are unreliable.{reason}"
        )
    return (
        f"**Mixed.** k-hat exceeds 0.7 for {pct(share)} of users (median {num(median)}); "
        f"the guide approximates the posterior well for some users only.{reason}"
    )


def loglik_verdict(psis: dict) -> str:
    gain = psis["loglik_psis"] - psis["loglik_guide"]
    reliable = psis["history_share_above_0.7"] < 0.5
    return (
        f"{num(psis['loglik_plain'])} (mean over draws of "
        f"log p), {num(psis['loglik_guide'])} (guide predictive, what the recommender scores), "
        f"{num(psis['loglik_psis'])} (PSIS-corrected). "
        + (
            f"The exact posterior would change it by {gain:+.3g} nats per user."
            if reliable
            else f"The correction ({gain:+.3g} nats) is not reliable: k-hat of its weights exceeds "
            f"0.7 for {pct(psis['history_share_above_0.7'])} of users."
        )
    )


def collapse_verdict(mixture) -> str:
    share = mixture.collapse_share
    median_kl = float(np.median(mixture.kl_per_dim))
    if mixture.posterior_collapse:
        return (
            f"**yes**: KL(q || prior) at the last position is below 0.01 nats per dimension "
            f"for {pct(share)} of users (median {num(median_kl)}): z carries almost no "
            f"information about the history."
        )
    return (
        f"**no**: median KL(q || prior) {num(median_kl)} nats per dimension; "
        f"{pct(share)} of users below 0.01."
    )


def calibration_verdict(calibration: dict) -> str:
    off = [r for r in calibration["hit_rates"] if r["verdict"] != "consistent"]
    if off:
        hit_rates = (
            "**"
            + "; ".join(
                f"{r['verdict']} at K={r['k']} (expected {num(r['expected'])}, "
                f"observed {num(r['observed'])})"
                for r in off
            )
            + "**"
        )
    else:
        hit_rates = (
            "**consistent**: observed hit rates at K = "
            + ", ".join(str(r["k"]) for r in calibration["hit_rates"])
            + " are within 2 standard errors of the predictive's own expectation"
        )
    return (
        hit_rates + f"; PIT uniformity KS p = {num(calibration['pit_ks_pvalue'])}, PIT mean "
        f"{num(calibration['pit_mean'])} (0.5 if calibrated; above: held-out items sit in "
        f"the predictive's tail more often than it expects)."
    )


def mixture_verdict(mixture) -> str:
    k = len(mixture.mean_weight)
    facts = mixture.summary()
    problems = []
    if mixture.collapsed:
        problems.append(
            f"{len(mixture.collapsed)} of {k} components collapsed (no user weights "
            f"them above {num(mixture.threshold)}: {mixture.collapsed})"
        )
    if mixture.overlapping:
        problems.append(
            f"the components nearly coincide (means {num(facts['separation_median'])}"
            f" component scales apart per dimension, median over users), so the "
            f"mixture acts as a single Gaussian"
        )
    if mixture.uniform_weights:
        problems.append(
            f"the prior weights are near uniform for every user (effective number "
            f"{num(facts['weight_components_median'])} of {k}), so they carry "
            f"little about the user"
        )
    weights = (
        f"the weights differ between users (effective number "
        f"{num(facts['weight_components_median'])} of {k})"
        if mixture.user_specific
        else "the weights are shared by all users"
    )
    verdict = (
        "**degenerate**: " + "; ".join(problems) + "."
        if problems
        else f"**healthy**: all {k} components are used by some user, their means are "
        f"{num(facts['separation_median'])} scales apart and {weights}."
    )
    return (
        verdict + f" Effective number of components in the posterior: "
        f"{num(facts['effective_components'])} of {k}"
        + (
            f"; components {mixture.unoccupied} never hold z (responsibility above "
            f"{num(mixture.threshold)} for no user)."
            if mixture.unoccupied
            else "."
        )
    )


def seeds_verdict(runs_table, chain_names: list[str]) -> str:
    if len(chain_names) < 2:
        return (
            "not assessed: one model only (pass independently trained seeds with "
            "`--seeds-models` for R-hat)."
        )
    high = runs_table[runs_table["r_hat"] > RHAT_LIMIT]
    if high.empty:
        return (
            f"**agree**: R-hat at most {RHAT_LIMIT} for every run-level quantity over "
            f"{len(chain_names)} seeds."
        )
    return (
        f"**disagree** beyond draw noise (R-hat > {RHAT_LIMIT}) on "
        + ", ".join(
            f"{name} (R-hat {num(row['r_hat'])}, sd over all draws {num(row['sd'])})"
            for name, row in high.iterrows()
        )
        + f" across {len(chain_names)} seeds: quote seed-to-seed spread with results."
    )
