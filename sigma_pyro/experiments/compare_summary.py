"""``summary.md`` of the prior comparison: test metrics per prior, the paired comparison
with the reference prior, the recovery of planted structure and the failed runs."""

from __future__ import annotations

import pandas as pd

from sigma_pyro.experiments.measure import DIVERSITY_K
from sigma_pyro.experiments.metrics import METRICS, REFERENCE, paired_comparison
from sigma_pyro.experiments.reporting import markdown_table, mean_std, number

PAIRED = ("ndcg@10", "recall@20")
SUMMARY_COLUMNS = (
    *METRICS,
    "iwae_per_token",
    "final_elbo_per_token",
    f"diversity@{DIVERSITY_K}",
    f"diversity_own@{DIVERSITY_K}",
    "epochs",
    "wall_seconds",
)
NMI_COLUMNS = ("nmi_items", "nmi_items_chance", "nmi_users", "nmi_users_chance", "nmi_users_oracle")


def render_summary(
    results: pd.DataFrame, command: str, revision: str, baselines: dict | None = None
) -> str:
    ok = results[results["status"] == "ok"]
    priors = list(dict.fromkeys(results["prior"]))
    parts = [
        _header(results, ok, command, revision, baselines),
        _metrics_section(ok, priors, baselines),
        _paired_section(results, ok, priors),
    ]
    if ok["nmi_items"].notna().any():
        parts.append(_recovery_section(ok, priors))
    failed = results[results["status"] != "ok"]
    if len(failed):
        parts.append(_failed_section(failed))
    return "".join(parts)


def _header(results, ok, command: str, revision: str, baselines: dict | None) -> str:
    lines = ["# Prior comparison\n", f"- command: `{command}`", f"- code: `{revision}`"]
    if baselines:
        lines.append(
            f"- data: {baselines['data']}: {baselines['num_users']} users, "
            f"{baselines['num_items']} items"
        )
    lines.append(f"- runs: {len(ok)} finished of {len(results)} recorded\n")
    return "\n".join(lines) + "\n"


def _digits(column: str) -> int:
    if column in ("epochs", "wall_seconds"):
        return 1
    return 2 if column.startswith(("iwae", "final_elbo", "diversity")) else 4


def _metrics_section(ok: pd.DataFrame, priors: list[str], baselines: dict | None) -> str:
    rows = []
    for prior in priors:
        runs = ok[ok["prior"] == prior]
        rows.append([prior, len(runs), *(mean_std(runs[c], _digits(c)) for c in SUMMARY_COLUMNS)])
    text = "## Test metrics, mean ± std over seeds\n\n"
    text += markdown_table(["prior", "seeds", *SUMMARY_COLUMNS], rows) + "\n"
    if baselines:
        reference = " ".join(
            f"{name} ndcg@10={values['ndcg@10']:.4f} recall@20={values['recall@20']:.4f}"
            for name, values in baselines.items()
            if isinstance(values, dict) and "ndcg@10" in values
        )
        text += f"\nReference points on the same test split: {reference}.\n"
    return text + (
        "\nIWAE and ELBO are log-likelihoods per predicted item (higher is better); the "
        "IWAE bound is on the test sequences, the ELBO on the last epoch's monitoring "
        "batch of training data. diversity@20: distinct categories among a user's top 20 "
        f"({(baselines or {}).get('diversity_reference', 'reference partition')}); "
        "diversity_own@20 uses the prior's own item clusters. epochs: epochs run before "
        "early stopping; wall_seconds: training time.\n\n"
    )


def _paired_section(results: pd.DataFrame, ok: pd.DataFrame, priors: list[str]) -> str:
    text = f"## Paired comparison with `{REFERENCE}` (same seeds)\n\n"
    if REFERENCE not in set(ok["prior"]):
        return text + f"No finished `{REFERENCE}` runs to compare with.\n\n"
    rows = []
    for prior in priors:
        if prior == REFERENCE:
            continue
        paired = [paired_comparison(results, metric, prior) for metric in PAIRED]
        cells = [
            cell
            for result in paired
            for cell in (number(result["difference"], signed=True), number(result["p"], 3))
        ]
        rows.append([prior, paired[0]["pairs"], *cells])
    header = ["prior", "pairs"]
    for metric in PAIRED:
        header += [f"Δ {metric}", "p (paired t)"]
    return (
        text
        + markdown_table(header, rows)
        + "\n\nΔ is the mean over seeds of (prior − normal); p is scipy.stats.ttest_rel, "
        "n/a with fewer than two pairs.\n\n"
    )


def _recovery_section(ok: pd.DataFrame, priors: list[str]) -> str:
    rows = [
        [prior, *(mean_std(ok[ok["prior"] == prior][c], 3) for c in NMI_COLUMNS)]
        for prior in priors
    ]
    header = ["prior", "items", "items (chance)", "users", "users (chance)", "users (oracle)"]
    return (
        "## Recovery of the planted structure (NMI)\n\n"
        + markdown_table(header, rows)
        + "\n\nItems: argmax prototype (sigma) or mixture component (gmm, vamp) vs planted "
        "category; users: strongest learned interest or component vs strongest planted "
        "interest. Chance: the same against a random permutation of the labels. Oracle: "
        "the majority planted category of each history vs the strongest planted "
        "interest, the most that the histories tell.\n\n"
    )


def _failed_section(failed: pd.DataFrame) -> str:
    lines = ["## Failed runs\n"]
    lines += [
        f"- {row['prior']} seed {row['seed']}: {row['status']}" for _, row in failed.iterrows()
    ]
    return "\n".join(lines) + "\n"
