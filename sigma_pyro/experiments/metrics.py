"""The test metrics every experiment records, and the paired test between two variants
over the seeds both finished."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20", "mrr")
REFERENCE = "normal"


def paired_comparison(
    results: pd.DataFrame, metric: str, prior: str, reference: str = REFERENCE
) -> dict:
    """Mean difference ``prior - reference`` of ``metric`` over the seeds both have, and
    the paired t-test p-value (NaN with fewer than two pairs or no variation)."""
    ok = results[results["status"] == "ok"]
    a = ok[ok["prior"] == prior].set_index("seed")[metric].astype(float)
    b = ok[ok["prior"] == reference].set_index("seed")[metric].astype(float)
    seeds = sorted(set(a.index) & set(b.index))
    a, b = a.loc[seeds].to_numpy(), b.loc[seeds].to_numpy()
    difference = float(np.mean(a - b)) if seeds else math.nan
    p = math.nan
    if len(seeds) >= 2 and np.ptp(a - b) > 0:
        p = float(stats.ttest_rel(a, b).pvalue)
    return {"pairs": len(seeds), "difference": difference, "p": p}
