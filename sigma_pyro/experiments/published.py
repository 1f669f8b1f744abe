"""Published numbers on the same data files, to set our results beside.

They live in a CSV (``results/published.csv``: dataset, model, source, then metric
columns), not in code, so each number carries its source and nothing of ours is typed in
by hand. Only the datasets of the results table are used; a metric a paper did not report
is left empty.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sigma_pyro.errors import DataError
from sigma_pyro.experiments.metrics import METRICS

REQUIRED = ("dataset", "model", "source")


def load_published(path: str | Path) -> pd.DataFrame:
    """The rows of ``path``, with every metric column of ours it has as floats."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype={"dataset": str, "model": str, "source": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read published numbers ({err})") from None
    missing = [column for column in REQUIRED if column not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    metrics = [column for column in METRICS if column in frame.columns]
    if not metrics:
        raise DataError(f"{path}: no metric column (any of {', '.join(METRICS)})")
    for column in metrics:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() & frame[column].notna()
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise DataError(
                f"{path}: row {row + 1}: {column} is not a number ({frame[column].iloc[row]!r})"
            )
        frame[column] = values
    return frame[[*REQUIRED, *metrics]]
