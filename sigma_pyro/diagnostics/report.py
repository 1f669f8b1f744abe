"""``report.md``: what is healthy and what is not, in words, with the numbers."""

from __future__ import annotations

from sigma_pyro.diagnostics.verdicts import (
    calibration_verdict,
    collapse_verdict,
    loglik_verdict,
    mixture_verdict,
    num,
    pct,
    psis_verdict,
    seeds_verdict,
)


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [
        "| " + " | ".join(v if isinstance(v, str) else num(v) for v in row) + " |" for row in rows
    ]
    return lines + [""]


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
        mixture_line = "- Mixture: " + mixture_verdict(mixture)
    else:
        mixture_line = (
            f"- Mixture: not applicable, the `{settings['prior']}` prior is not a mixture."
        )
    return [
        "",
        "## Summary",
        "",
        "- PSIS: " + verdict,
        "- Held-out log-likelihood per user: " + loglik_verdict(psis),
        mixture_line,
        "- Posterior collapse: " + collapse_verdict(mixture),
        "- Calibration: " + calibration_verdict(calibration),
        "- Seeds: " + seeds_verdict(runs_table, chain_names),
    ]


def _psis_section(psis: dict, settings: dict, spread: dict) -> list[str]:
    lines = ["", "## PSIS k-hat of the guide", ""]
    lines += _table(
        ["min", "25%", "median", "75%", "90%", "max", "> 0.5", "> 0.7"],
        [
            [
                *psis["khat_quantiles"].values(),
                pct(psis["share_above_0.5"]),
                pct(psis["share_above_0.7"]),
            ]
        ],
    )
    lines.append(
        f"log w = log p(x, z) - log q(z | x) over every latent site, x the full sequence; "
        f"k-hat below {num(psis['good_k'])} (the threshold for {settings['samples']} draws) is "
        f"good, above 0.7 unreliable (Yao et al. 2018; Vehtari et al. 2024). Spread of z at the "
        f"last position: guide draws sd {num(spread['guide_scale'])}, prior sd "
        f"{num(spread['prior_scale'])}. Figure: `khat.png`."
    )
    return lines


def _mixture_section(mixture, users: int) -> list[str]:
    lines = ["", "## Mixture components", ""]
    lines += _table(
        [
            "component",
            "mean weight",
            f"users with weight > {num(mixture.threshold)}",
            "mean responsibility",
            f"users with responsibility > {num(mixture.threshold)}",
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
        f"{num(facts['separation_median'])} component scales apart per dimension; "
        f"effective number of prior weights {num(facts['weight_components_median'])}"
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
        f"Median rank of the held-out item {num(calibration['median_rank'])} "
        f"({num(calibration['median_normalised_rank'])} of the catalog). PIT counts per "
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
                ", ".join(map(num, seed_means[name])),
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
