"""Recommendation tables written chunk by chunk: CSV or Parquet, chosen by the extension.

Chunks are appended to a temporary file as they come (a Parquet row group each), so a
table of millions of users never has to be in memory at once, and the file appears under
its name only when complete.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from sigma_pyro.errors import ConfigError
from sigma_pyro.runtime.checkpoint import atomic_output

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def table_format(path: Path) -> str:
    """``csv`` or ``parquet`` from the file's extension; anything else is a ConfigError."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(
            f"{path}: cannot tell the table format from {suffix or 'no extension'!r}; "
            f"use one of {', '.join(FORMATS)}"
        )
    return FORMATS[suffix]


def write_chunks(path: Path, frames: Iterable[pd.DataFrame]) -> int:
    """Write the frames (the same columns each) one after the other to ``path``,
    atomically; returns the number of rows."""
    writer = _parquet_chunks if table_format(path) == "parquet" else _csv_chunks
    with atomic_output(path) as tmp:
        return writer(tmp, frames)


def _csv_chunks(tmp: Path, frames: Iterable[pd.DataFrame]) -> int:
    rows = 0
    with open(tmp, "w", encoding="utf-8", newline="") as handle:
        for frame in frames:
            frame.to_csv(handle, header=handle.tell() == 0, index=False)
            rows += len(frame)
    return rows


def _parquet_chunks(tmp: Path, frames: Iterable[pd.DataFrame]) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(
            "writing Parquet needs pyarrow: pip install 'sigma-pyro[parquet]'"
        ) from None
    schema = pa.schema(
        [
            ("user", pa.string()),
            ("rank", pa.int32()),
            ("item", pa.string()),
            ("score", pa.float32()),
        ]
    )
    rows = 0
    with pq.ParquetWriter(tmp, schema) as writer:
        for frame in frames:
            writer.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
            rows += len(frame)
    return rows
