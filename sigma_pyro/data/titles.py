"""Item titles for explanations: a CSV or TSV file with an item id column and a title column."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sigma_pyro.errors import DataError

SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}


def read_titles(path: Path, item_column: str, title_column: str) -> dict[str, str]:
    """Raw item id -> title. Ids are read as strings, like the interaction readers read them,
    so ``007`` stays ``007``."""
    path = Path(path)
    separator = SEPARATORS.get(path.suffix.lower())
    if separator is None:
        raise DataError(f"{path}: item files are .csv, .tsv or .tab, not {path.suffix!r}")
    try:
        table = pd.read_csv(path, sep=separator, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path}: cannot read it ({reason})") from None
    missing = [c for c in (item_column, title_column) if c not in table.columns]
    if missing:
        raise DataError(
            f"{path}: no column {missing[0]!r} (it has {', '.join(map(repr, table.columns))})"
        )
    return dict(zip(table[item_column], table[title_column], strict=True))
