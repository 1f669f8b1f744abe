"""The ``table`` format: CSV, TSV or Parquet with configurable column names, read through
pandas."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from sigma_pyro.data.interactions import Interactions
from sigma_pyro.data.readers.common import (
    _check_file,
    _check_options,
    _decode_error_message,
    _first_line,
    _from_frame,
)
from sigma_pyro.errors import DataError

_CSV_SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
_PARQUET_EXTENSIONS = (".parquet", ".pq")


def read_table(
    path,
    *,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str | None = "timestamp",
    rating_col: str | None = None,
    min_rating=None,
    kcore: int = 0,
    sep: str | None = None,
) -> Interactions:
    """Read a CSV, TSV or Parquet table with one interaction per row.

    ``time_col=None`` keeps file order; otherwise the column must hold numbers or datetimes.
    ``rating_col`` defaults to a column named ``rating`` when ``min_rating`` is given.
    ``sep`` overrides the separator implied by the extension (``.csv`` ``,``; ``.tsv``/``.tab``
    tab).
    """
    path = Path(path)
    name = str(path)
    _check_options(min_rating, kcore)
    _check_file(path)
    is_parquet = path.suffix.lower() in _PARQUET_EXTENSIONS
    frame = _read_parquet(path, name) if is_parquet else _read_csv(path, name, sep)
    if frame.empty:
        raise DataError(f"{name}: header only, no interactions")
    if min_rating is not None and rating_col is None:
        rating_col = _default_rating_column(frame, name)
    columns = {
        "user_col": user_col,
        "item_col": item_col,
        "time_col": time_col,
        "rating_col": rating_col,
    }
    _check_columns(frame, name, columns)
    out = _interactions_frame(frame, name, columns, _locator(frame, name, is_parquet))
    time = "time" if time_col is not None else None
    return _from_frame(out, name, min_rating=min_rating, kcore=kcore, time=time)


def _locator(frame: pd.DataFrame, name: str, is_parquet: bool):
    """``where(position)``: the place of a data row in an error message. Parquet has no text
    lines, so positions are reported as data rows there. Text tables keep each row's index
    from before blank lines were dropped; the header is line 1."""

    def where(position: int) -> str:
        return (
            f"{name}: row {position + 1}"
            if is_parquet
            else f"{name}:{int(frame.index[position]) + 2}"
        )

    return where


def _default_rating_column(frame: pd.DataFrame, name: str) -> str:
    if "rating" not in frame.columns:
        raise DataError(
            f"{name}: min_rating needs a rating column: pass rating_col "
            f"(available columns: {_column_list(frame)})"
        )
    return "rating"


def _check_columns(frame: pd.DataFrame, name: str, columns: dict[str, str | None]) -> None:
    for option, column in columns.items():
        if column is not None and column not in frame.columns:
            hint = "; pass time_col=None to keep file order" if option == "time_col" else ""
            raise DataError(
                f"{name}: no column {column!r} ({option}); available columns: "
                f"{_column_list(frame)}{hint}"
            )


def _interactions_frame(
    frame: pd.DataFrame, name: str, columns: dict[str, str | None], where
) -> pd.DataFrame:
    """The ``user``, ``item`` (and ``rating``, ``time``) columns, each checked cell by cell."""
    user_col, item_col = columns["user_col"], columns["item_col"]
    rating_col, time_col = columns["rating_col"], columns["time_col"]
    out = pd.DataFrame(
        {
            "user": _id_column(frame[user_col], user_col, where),
            "item": _id_column(frame[item_col], item_col, where),
        }
    )
    if rating_col is not None:
        ratings = pd.to_numeric(frame[rating_col], errors="coerce")
        _fail_on_missing(ratings, frame[rating_col], rating_col, where, "a number")
        out["rating"] = ratings.to_numpy(dtype=float)
    if time_col is not None:
        out["time"] = _time_column(frame[time_col], name, time_col, where)
    return out


def _read_csv(path: Path, name: str, sep: str | None) -> pd.DataFrame:
    if sep is None:
        sep = _CSV_SEPARATORS.get(path.suffix.lower())
        if sep is None:
            raise DataError(
                f"{name}: cannot tell the separator from the extension "
                f"{path.suffix or '(none)'!r}; "
                "pass sep (',' or '\\t')"
            )
    try:
        # dtype=str and no NA parsing keep ids such as '007' or 'NA' exactly as written; blank
        # lines are read as rows and dropped below so that row labels still count file lines.
        frame = pd.read_csv(path, sep=sep, dtype=str, na_filter=False, skip_blank_lines=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{name}: file is empty") from None
    except UnicodeDecodeError:
        raise DataError(_locate_decode_error(path, name)) from None
    except pd.errors.ParserError as exc:
        raise DataError(_parser_error_message(name, exc)) from None
    except (ValueError, OSError) as exc:
        raise DataError(f"{name}: cannot read as a table: {_first_line(exc)}") from None
    if frame.columns.empty:
        raise DataError(f"{name}:1: the header line is empty")
    if not isinstance(frame.index, pd.RangeIndex):
        # pandas silently turns extra leading fields into an index, shifting every column.
        width = len(frame.columns)
        raise DataError(
            f"{name}:2: expected {width} fields like the header, got {width + frame.index.nlevels}"
        )
    # pandas renames a repeated header name to 'name.1', which would hide the mistake.
    header = (
        pd.read_csv(
            path, sep=sep, dtype=str, na_filter=False, skip_blank_lines=False, header=None, nrows=1
        )
        .iloc[0]
        .tolist()
    )
    repeated = [column for column in header if header.count(column) > 1]
    if repeated:
        raise DataError(f"{name}:1: header column {repeated[0]!r} appears more than once")
    return frame[~(frame == "").all(axis=1)]


def _read_parquet(path: Path, name: str) -> pd.DataFrame:
    try:
        import pyarrow
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            f"{name}: reading Parquet needs pyarrow (pip install 'sigma-pyro[parquet]')"
        ) from None
    try:
        with pq.ParquetFile(path) as file:
            columns = file.schema_arrow.names
            table = file.read()
        # A damaged file can hold strings that are not UTF-8; they would fail much later.
        table.validate(full=True)
        repeated = [column for column in columns if columns.count(column) > 1]
        if repeated:
            raise DataError(f"{name}: column {repeated[0]!r} appears more than once")
        # The pandas metadata only restores the index, and a damaged copy can fail to parse.
        return table.to_pandas(ignore_metadata=True)
    except (pyarrow.ArrowException, ValueError, OSError) as exc:
        raise DataError(f"{name}: not a readable Parquet file: {_first_line(exc)}") from None


def _locate_decode_error(path: Path, name: str) -> str:
    # pandas reports offsets inside its read buffer, not the file, so find the byte ourselves.
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _decode_error_message(name, data, exc)
    return f"{name}: not valid UTF-8; convert the file to UTF-8"


def _parser_error_message(name: str, exc: Exception) -> str:
    match = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
    if match:
        expected, line, saw = match.groups()
        return f"{name}:{line}: expected {expected} fields like the header, got {saw}"
    return f"{name}: cannot parse as a table: {_first_line(exc)}"


def _column_list(frame: pd.DataFrame) -> str:
    return ", ".join(repr(str(c)) for c in frame.columns) or "(none)"


def _fail_on_missing(parsed: pd.Series, raw: pd.Series, column: str, where, expected: str) -> None:
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if bad.size:
        position = int(bad[0])
        raise DataError(
            f"{where(position)}: column {column!r}: expected {expected}, got {raw.iloc[position]!r}"
        )


def _id_column(column: pd.Series, label: str, where) -> np.ndarray:
    ids = column.astype(str)
    # Parquet can hold real nulls; CSV cells were read verbatim, so empty is the only gap there.
    missing = column.isna().to_numpy() | (ids.str.strip() == "").to_numpy()
    bad = np.flatnonzero(missing)
    if bad.size:
        raise DataError(f"{where(int(bad[0]))}: column {label!r}: empty id")
    return ids.to_numpy(dtype=object)


def _time_column(column: pd.Series, name: str, label: str, where) -> np.ndarray:
    """Timestamps as float seconds (plain numbers are kept as they are), for sorting only."""
    try:
        if not pd.api.types.is_datetime64_any_dtype(column):
            numbers = pd.to_numeric(column, errors="coerce")
            # The first row decides the column's kind, so a stray word in a numeric column is
            # reported as itself rather than as every number failing to parse as a date.
            if not pd.isna(numbers.iloc[0]):
                _fail_on_missing(numbers, column, label, where, "a number")
                return numbers.to_numpy(dtype=float)
        with warnings.catch_warnings():
            # pandas warns when it falls back to per-element parsing; that is what we want.
            warnings.simplefilter("ignore", UserWarning)
            stamps = pd.to_datetime(column, errors="coerce", utc=True)
            if stamps.isna().any():
                # The default parser guesses one format from the first value; retry per value.
                stamps = pd.to_datetime(column, errors="coerce", utc=True, format="mixed")
    except (ValueError, TypeError, OverflowError) as exc:
        raise DataError(
            f"{name}: column {label!r}: cannot parse timestamps: {_first_line(exc)}"
        ) from None
    _fail_on_missing(stamps, column, label, where, "a number or a date/time")
    return ((stamps - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy(dtype=float)
