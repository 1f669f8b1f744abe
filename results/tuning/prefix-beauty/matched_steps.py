"""Validation NDCG@20 and training loss of the prefix-sample run beside the whole-sequence
run (relative positions, seed 0) at the nearest step; writes matched_steps.csv here."""

from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sequences = pd.read_csv(HERE.parent / "positions-beauty" / "curves.csv").query(
    "variant == 'relative' and seed == 0"
)
prefixes = pd.read_csv(HERE / "curves.csv")
matched = pd.merge_asof(
    prefixes.sort_values("step"),
    sequences.sort_values("step"),
    on="step",
    direction="nearest",
    suffixes=("_prefixes", "_sequences"),
)
columns = ["step", "epoch_prefixes", "step_sequences"]
matched["step_sequences"] = matched["epoch_sequences"] * 699
for name in ("loss", "valid_ndcg@20"):
    columns += [f"{name}_prefixes", f"{name}_sequences"]
matched[columns].to_csv(HERE / "matched_steps.csv", index=False, float_format="%.4f")
print(matched[columns].to_string(index=False, float_format="%.4f"))
