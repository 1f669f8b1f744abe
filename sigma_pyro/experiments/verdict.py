"""What the results table says about sigma against its references, in numbers and in one
computed sentence: the variants' order, the best mean of each metric, and the paired tests
over the seeds both variants finished."""

from __future__ import annotations

import pandas as pd

from sigma_pyro.experiments.metrics import METRICS, paired_comparison

SUBJECT = "sigma"
REFERENCES = ("normal", "deterministic")
ORDER = (SUBJECT, *REFERENCES)
ALPHA = 0.05
DIGITS = 4
LABELS = {
    "recall@10": "Recall@10",
    "recall@20": "Recall@20",
    "ndcg@10": "NDCG@10",
    "ndcg@20": "NDCG@20",
    "mrr": "MRR",
}
NO_PAIRS = "n/a: no paired seeds"


def ordered_variants(ok: pd.DataFrame) -> list[str]:
    present = list(dict.fromkeys(ok["prior"]))
    return [v for v in ORDER if v in present] + [v for v in present if v not in ORDER]


def best_variants(ok: pd.DataFrame, variants: list[str], metric: str) -> set[str]:
    """The variants whose mean, as printed, is the highest: ties share the bold."""
    means = {v: round(ok.loc[ok["prior"] == v, metric].mean(), DIGITS) for v in variants}
    top = max(means.values())
    return {v for v, mean in means.items() if mean == top}


def paired_with(runs: pd.DataFrame, reference: str) -> dict[str, dict]:
    return {m: paired_comparison(runs, m, SUBJECT, reference) for m in METRICS}


def _names(metrics: list[str]) -> str:
    labels = [LABELS[m] for m in metrics]
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def _wins(ok: pd.DataFrame, variants: list[str]) -> str:
    best = {metric: best_variants(ok, variants, metric) for metric in METRICS}
    won = [m for m in METRICS if SUBJECT in best[m]]
    text = (
        f"{SUBJECT} has the best mean on {len(won)} of {len(METRICS)} metrics among "
        f"{len(variants)} variants"
    )
    lost = [f"{LABELS[m]} (best: {', '.join(sorted(best[m]))})" for m in METRICS if m not in won]
    return text + (f"; it does not win {', '.join(lost)}" if lost else "")


def _tests(runs: pd.DataFrame, variants: list[str], reference: str) -> str:
    if reference not in variants:
        return f"there are no finished {reference} runs to test against"
    results = paired_with(runs, reference)
    pairs = results[METRICS[0]]["pairs"]
    if pairs == 0:
        return f"{NO_PAIRS} with {reference}, so no test against it"
    if pairs == 1:
        return f"a single seed paired with {reference} is too few to test a difference"
    significant = [m for m, r in results.items() if r["p"] < ALPHA]
    if not significant:
        return f"no difference to {reference} is significant at p < {ALPHA} ({pairs} paired seeds)"
    better = [m for m in significant if results[m]["difference"] > 0]
    worse = [m for m in significant if results[m]["difference"] < 0]
    parts = ([f"better on {_names(better)}"] if better else []) + (
        [f"worse on {_names(worse)}"] if worse else []
    )
    rest = len(METRICS) - len(significant)
    return (
        f"against {reference} ({pairs} paired seeds) {SUBJECT} is significantly "
        f"{' and '.join(parts)} at p < {ALPHA}"
        + (f", with no significant difference on the other {rest}" if rest else "")
    )


def verdict(runs: pd.DataFrame) -> str:
    """One sentence, from the numbers, on where sigma wins and, plainly, where it does not."""
    ok = runs[runs["status"] == "ok"]
    variants = ordered_variants(ok)
    if SUBJECT not in variants:
        return f"There are no finished {SUBJECT} runs, so nothing can be said about {SUBJECT}."
    if len(variants) == 1:
        return f"Only {SUBJECT} has finished runs: there is nothing to compare it with."
    clauses = [_wins(ok, variants), *(_tests(runs, variants, r) for r in REFERENCES)]
    return "; ".join(clauses) + "."
