"""``report.md``: what is healthy and what is not, in words, with the numbers."""

from __future__ import annotations

import math

import numpy as np

RHAT_LIMIT = 1.01
# The guide is "much narrower" than the prior below this ratio of standard deviations.
NARROW_RATIO = 0.5


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _num(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.0f}"


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [
        "| " + " | ".join(v if isinstance(v, str) else _num(v) for v in row) + " |" for row in rows
    ]
    return lines + [""]


def psis_verdict(psis: dict, guide_scale: float, prior_scale: float, kl_weight: float) -> str:
    share = psis["share_above_0.7"]
    median = psis["khat_quantiles"]["median"]
    if share <= 0.1 and median <= psis["good_k"]:
        return (
            f"**Healthy.** The guide is a reliable importance proposal for the posterior: "
            f"median k-hat {_num(median)}, {_pct(share)} of users above 0.7."
        )
    narrow = guide_scale < NARROW_RATIO * prior_scale
    reason = (
        f" Its draws are much narrower than the prior (sd of z {_num(guide_scale)} "
        f"against the prior's {_num(prior_scale)}): trained with a KL weight of "
        f"{_num(kl_weight)} per token instead of 1, the guide is not meant to "
        f"match the unannealed posterior, which importance sampling measures."
        if narrow
        else ""
    )
    if share >= 0.5:
        return (
            f"**Unhealthy.** For {_pct(share)} of users k-hat exceeds 0.7 (median "
            f"{_num(median)}): q(z | x) misses posterior mass, so its draws and any "
            f"importance-weighted estimate from them are unreliable.{reason}"
        )
    return (
        f"**Mixed.** k-hat exceeds 0.7 for {_pct(share)} of users (median {_num(median)}); "
        f"the guide approximates the posterior well for some users only.{reason}"
    )


def render(
    *,
    title: str,
    settings: dict,
    psis: dict,
    mixture,
    calibration: dict,
    spread: dict,
    runs_table,
    seed_means: dict,
    chain_names: list[str],
    files: dict,
) -> str:
    lines = _intro(title, settings, chain_names)
    lines += _summary(settings, psis, mixture, calibration, spread, runs_table, chain_names)
    lines += _psis_section(psis, settings, spread)
    if mixture.is_mixture:
        lines += _mixture_section(mixture, settings["users"])
    lines += _calibration_section(calibration)
    lines += _seeds_section(runs_table, seed_means)
    lines += _files_section(files)
    return "\n".join(lines) + "\n"


def _intro(title: str, settings: dict, chain_names: list[str]) -> list[str]:
    return [
        f"# Posterior diagnostics: {title}",
        "",
        f"{settings['users']} test users (sampled with seed {settings['seed']}), "
        f"{settings['samples']} guide draws each; prior `{settings['prior']}`, "
        f"{settings['latent_dim']} latent dimensions; history = all items but the last, "
        f"held-out = the last item. Model(s): {', '.join(f'`{c}`' for c in chain_names)}.",
    ]


def _summary(
    settings: dict,
    psis: dict,
    mixture,
    calibration: dict,
    spread: dict,
    runs_table,
    chain_names: list[str],
) -> list[str]:
    verdict = psis_verdict(
        psis, spread["guide_scale"], spread["prior_scale"], settings["kl_weight"]
    )
    if mixture.is_mixture:
        mixture_line = "- Mixture: " + _mixture_verdict(mixture)
    else:
        mixture_line = (
            f"- Mixture: not applicable, the `{settings['prior']}` prior is not a mixture."
        )
    return [
        "",
        "## Summary",
        "",
        "- PSIS: " + verdict,
        "- Held-out log-likelihood per user: " + _loglik_verdict(psis),
        mixture_line,
        "- Posterior collapse: " + _collapse_verdict(mixture),
        "- Calibration: " + _calibration_verdict(calibration),
        "- Seeds: " + _seeds_verdict(runs_table, chain_names),
    ]


def _loglik_verdict(psis: dict) -> str:
    gain = psis["loglik_psis"] - psis["loglik_guide"]
    reliable = psis["history_share_above_0.7"] < 0.5
    return (
        f"{_num(psis['loglik_plain'])} (mean over draws of "
        f"log p), {_num(psis['loglik_guide'])} (guide predictive, what the recommender scores), "
        f"{_num(psis['loglik_psis'])} (PSIS-corrected). "
        + (
            f"The exact posterior would change it by {gain:+.3g} nats per user."
            if reliable
            else f"The correction ({gain:+.3g} nats) is not reliable: k-hat of its weights exceeds "
            f"0.7 for {_pct(psis['history_share_above_0.7'])} of users."
        )
    )


def _collapse_verdict(mixture) -> str:
    share = mixture.collapse_share
    median_kl = float(np.median(mixture.kl_per_dim))
    if mixture.posterior_collapse:
        return (
            f"**yes**: KL(q || prior) at the last position is below 0.01 nats per dimension "
            f"for {_pct(share)} of users (median {_num(median_kl)}): z carries almost no "
            f"information about the history."
        )
    return (
        f"**no**: median KL(q || prior) {_num(median_kl)} nats per dimension; "
        f"{_pct(share)} of users below 0.01."
    )


def _calibration_verdict(calibration: dict) -> str:
    off = [r for r in calibration["hit_rates"] if r["verdict"] != "consistent"]
    if off:
        hit_rates = (
            "**"
            + "; ".join(
                f"{r['verdict']} at K={r['k']} (expected {_num(r['expected'])}, "
                f"observed {_num(r['observed'])})"
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
        hit_rates + f"; PIT uniformity KS p = {_num(calibration['pit_ks_pvalue'])}, PIT mean "
        f"{_num(calibration['pit_mean'])} (0.5 if calibrated; above: held-out items sit in "
        f"the predictive's tail more often than it expects)."
    )


def _psis_section(psis: dict, settings: dict, spread: dict) -> list[str]:
    lines = ["", "## PSIS k-hat of the guide", ""]
    lines += _table(
        ["min", "25%", "median", "75%", "90%", "max", "> 0.5", "> 0.7"],
        [
            [
                *psis["khat_quantiles"].values(),
                _pct(psis["share_above_0.5"]),
                _pct(psis["share_above_0.7"]),
            ]
        ],
    )
    lines.append(
        f"log w = log p(x, z) - log q(z | x) over every latent site, x the full sequence; "
        f"k-hat below {_num(psis['good_k'])} (the threshold for {settings['samples']} draws) is "
        f"good, above 0.7 unreliable (Yao et al. 2018; Vehtari et al. 2024). Spread of z at the "
        f"last position: guide draws sd {_num(spread['guide_scale'])}, prior sd "
        f"{_num(spread['prior_scale'])}. Figure: `khat.png`."
    )
    return lines


def _mixture_section(mixture, users: int) -> list[str]:
    lines = ["", "## Mixture components", ""]
    lines += _table(
        [
            "component",
            "mean weight",
            f"users with weight > {_num(mixture.threshold)}",
            "mean responsibility",
            f"users with responsibility > {_num(mixture.threshold)}",
            "mean scale",
        ],
        [
            [str(k), w, f"{u}/{users}", r, f"{o}/{users}", s]
            for k, (w, u, r, o, s) in enumerate(
                zip(
                    mixture.mean_weight,
                    mixture.users_using,
                    mixture.mean_responsibility,
                    mixture.users_occupying,
                    mixture.mean_scale,
                    strict=True,
                )
            )
        ],
    )
    facts = mixture.summary()
    lines.append(
        f"Median over users: component means "
        f"{_num(facts['separation_median'])} component scales apart per dimension; "
        f"effective number of prior weights {_num(facts['weight_components_median'])}"
        f" of {len(mixture.mean_weight)}. Figures: `forest_interests.png` (each "
        f"component across users), `mixture_weights.png` (posterior "
        f"responsibilities of a few users)."
    )
    return lines


def _calibration_section(calibration: dict) -> list[str]:
    lines = ["", "## Calibration of the posterior predictive", ""]
    lines += _table(
        ["K", "expected hit rate", "observed", "se", "verdict"],
        [
            [str(r["k"]), r["expected"], r["observed"], r["se"], r["verdict"]]
            for r in calibration["hit_rates"]
        ],
    )
    lines.append(
        f"Median rank of the held-out item {_num(calibration['median_rank'])} "
        f"({_num(calibration['median_normalised_rank'])} of the catalog). PIT counts per "
        f"tenth: {calibration['pit_counts']}. Figure: `predictive_rank.png`."
    )
    return lines


def _seeds_section(runs_table, seed_means: dict) -> list[str]:
    lines = ["", "## Seeds (run-level quantities, one chain per model)", ""]
    lines += _table(
        ["quantity", "mean", "sd", "ess_bulk", "ess_tail", "r_hat", "mean per seed"],
        [
            [
                name,
                row["mean"],
                row["sd"],
                row["ess_bulk"],
                row["ess_tail"],
                row["r_hat"],
                ", ".join(map(_num, seed_means[name])),
            ]
            for name, row in runs_table.iterrows()
        ],
    )
    lines.append(
        "Each value is a per-draw average over users. Draws within a chain are "
        "independent, so R-hat measures how far the seeds disagree beyond draw noise, "
        "and ESS falls well below the total number of draws only when they do. "
        "Data: `runs.nc`."
    )
    return lines


def _files_section(files: dict) -> list[str]:
    return ["", "## Files", "", *(f"- `{name}`: {what}" for name, what in files.items())]


def _mixture_verdict(mixture) -> str:
    k = len(mixture.mean_weight)
    facts = mixture.summary()
    problems = []
    if mixture.collapsed:
        problems.append(
            f"{len(mixture.collapsed)} of {k} components collapsed (no user weights "
            f"them above {_num(mixture.threshold)}: {mixture.collapsed})"
        )
    if mixture.overlapping:
        problems.append(
            f"the components nearly coincide (means {_num(facts['separation_median'])}"
            f" component scales apart per dimension, median over users), so the "
            f"mixture acts as a single Gaussian"
        )
    if mixture.uniform_weights:
        problems.append(
            f"the prior weights are near uniform for every user (effective number "
            f"{_num(facts['weight_components_median'])} of {k}), so they carry "
            f"little about the user"
        )
    weights = (
        f"the weights differ between users (effective number "
        f"{_num(facts['weight_components_median'])} of {k})"
        if mixture.user_specific
        else "the weights are shared by all users"
    )
    verdict = (
        "**degenerate**: " + "; ".join(problems) + "."
        if problems
        else f"**healthy**: all {k} components are used by some user, their means are "
        f"{_num(facts['separation_median'])} scales apart and {weights}."
    )
    return (
        verdict + f" Effective number of components in the posterior: "
        f"{_num(facts['effective_components'])} of {k}"
        + (
            f"; components {mixture.unoccupied} never hold z (responsibility above "
            f"{_num(mixture.threshold)} for no user)."
            if mixture.unoccupied
            else "."
        )
    )


def _seeds_verdict(runs_table, chain_names: list[str]) -> str:
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
            f"{name} (R-hat {_num(row['r_hat'])}, sd over all draws {_num(row['sd'])})"
            for name, row in high.iterrows()
        )
        + f" across {len(chain_names)} seeds: quote seed-to-seed spread with results."
    )
