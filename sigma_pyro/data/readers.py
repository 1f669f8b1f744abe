"""Readers that turn interaction files into :class:`Interactions`.

Three formats are understood:

* ``seq``: one user per line, ``user item item ...`` in time order (the SASRec/SIGMA format);
* ``inter``: RecBole atomic ``.inter`` files (tab separated, typed ``name:type`` header);
* ``table``: CSV, TSV or Parquet with configurable column names, read through pandas.

Every problem with the input is raised as a one-line :class:`DataError` naming the file and the
line (or column), because these messages are what a CLI user sees instead of a traceback.
"""

from __future__ import annotations

import codecs
import inspect
import re
import warnings
from numbers import Real
from pathlib import Path

import numpy as np
import pandas as pd

from sigma_pyro.data.interactions import Interactions
from sigma_pyro.errors import ConfigError, DataError

# Leave-one-out holds out the last item for test and the one before for validation, so a user
# needs at least one more item to have any training history.
MIN_ITEMS_PER_USER = 3

FORMATS = ("seq", "inter", "table")

_EXTENSION_FORMATS = {
    ".txt": "seq",
    ".seq": "seq",
    ".inter": "inter",
    ".csv": "table",
    ".tsv": "table",
    ".tab": "table",
    ".parquet": "table",
    ".pq": "table",
}
_CSV_SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
_PARQUET_EXTENSIONS = (".parquet", ".pq")
_INTER_TYPES = ("token", "token_seq", "float", "float_seq")


# --------------------------------------------------------------------------------------------
# Public readers
# --------------------------------------------------------------------------------------------


def read_sequence_file(path, *, min_rating=None, kcore: int = 0) -> Interactions:
    """Read ``user item item ...`` lines (whitespace separated, items in time order).

    Ids stay strings, so ``0`` is an ordinary item. Blank lines are ignored.
    """
    path = Path(path)
    name = str(path)
    _check_options(min_rating, kcore)
    _check_file(path)
    if min_rating is not None:
        raise DataError(f"{name}: min_rating needs a rating column, but sequence files have none")
    sequences: dict[str, list[str]] = {}
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(_read_lines(path), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) == 1:
            raise DataError(
                f"{name}:{lineno}: expected 'user item item ...', got 1 field "
                f"(user {fields[0]!r} has no items)"
            )
        user = fields[0]
        if user in first_line:
            raise DataError(
                f"{name}:{lineno}: user {user!r} already appeared on line {first_line[user]}; "
                "each user must have exactly one line"
            )
        first_line[user] = lineno
        sequences[user] = fields[1:]
    if not sequences:
        raise DataError(f"{name}: file is empty")
    notes: list[str] = []
    if kcore > 0:
        users = np.repeat(
            np.array(list(sequences), dtype=object), [len(s) for s in sequences.values()]
        )
        items = [item for seq in sequences.values() for item in seq]
        frame = _kcore(pd.DataFrame({"user": users, "item": items}), kcore, name, notes)
        sequences = _frame_to_sequences(frame, time=None)
    return _finish(sequences, name, notes)


def read_inter_file(path, *, min_rating=None, kcore: int = 0) -> Interactions:
    """Read a RecBole atomic ``.inter`` file.

    The header is tab separated ``name:type`` fields. The user and item fields are ``user_id``
    and ``item_id`` (or the single field whose name ends that way); ``rating`` and ``timestamp``
    are optional. Items are ordered by timestamp, ties and timestamp-less files in file order.
    """
    path = Path(path)
    name = str(path)
    _check_options(min_rating, kcore)
    _check_file(path)
    lines = iter(enumerate(_read_lines(path), 1))
    header_lineno, header = next(((n, line) for n, line in lines if line.strip()), (0, ""))
    if not header:
        raise DataError(f"{name}: file is empty")
    columns = _parse_inter_header(header, name, header_lineno)
    user_index = _pick_inter_field(columns, "user_id", name, header_lineno)
    item_index = _pick_inter_field(columns, "item_id", name, header_lineno)
    rating_index = columns.index("rating") if "rating" in columns else None
    time_index = columns.index("timestamp") if "timestamp" in columns else None
    if min_rating is not None and rating_index is None:
        raise DataError(
            f"{name}:{header_lineno}: min_rating needs a 'rating' field; "
            f"header has {', '.join(columns)}"
        )

    width = len(columns)
    users, items, ratings, times, linenos = [], [], [], [], []
    for lineno, line in lines:
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != width:
            raise DataError(
                f"{name}:{lineno}: expected {width} tab-separated fields "
                f"({', '.join(columns)}), got {len(fields)}"
            )
        user, item = fields[user_index].strip(), fields[item_index].strip()
        if not user or not item:
            column = columns[user_index] if not user else columns[item_index]
            raise DataError(f"{name}:{lineno}: empty {column}")
        users.append(user)
        items.append(item)
        if rating_index is not None:
            ratings.append(fields[rating_index])
        if time_index is not None:
            times.append(fields[time_index])
        linenos.append(lineno)
    if not users:
        raise DataError(f"{name}: header only, no interactions")

    frame = pd.DataFrame({"user": users, "item": items})
    if rating_index is not None:
        frame["rating"] = _parse_floats(ratings, linenos, name, columns[rating_index])
    time = None
    if time_index is not None:
        time = "time"
        frame["time"] = _parse_floats(times, linenos, name, columns[time_index])
    return _from_frame(frame, name, min_rating=min_rating, kcore=kcore, time=time)


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

    # Parquet has no text lines, so positions are reported as data rows there. Text tables keep
    # each row's index from before blank lines were dropped; the header is line 1.
    def where(position: int) -> str:
        return (
            f"{name}: row {position + 1}"
            if is_parquet
            else f"{name}:{int(frame.index[position]) + 2}"
        )

    if min_rating is not None and rating_col is None:
        if "rating" not in frame.columns:
            raise DataError(
                f"{name}: min_rating needs a rating column: pass rating_col "
                f"(available columns: {_column_list(frame)})"
            )
        rating_col = "rating"
    wanted = {
        "user_col": user_col,
        "item_col": item_col,
        "time_col": time_col,
        "rating_col": rating_col,
    }
    for option, column in wanted.items():
        if column is not None and column not in frame.columns:
            hint = "; pass time_col=None to keep file order" if option == "time_col" else ""
            raise DataError(
                f"{name}: no column {column!r} ({option}); available columns: "
                f"{_column_list(frame)}{hint}"
            )

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
    time = None
    if time_col is not None:
        time = "time"
        out["time"] = _time_column(frame[time_col], name, time_col, where)
    return _from_frame(out, name, min_rating=min_rating, kcore=kcore, time=time)


def load_interactions(path, format: str | None = None, **table_options) -> Interactions:
    """Read ``path`` in ``format`` (``seq``, ``inter``, ``table``, or inferred from the extension).

    ``table_options`` are the keyword options of :func:`read_table`; ``min_rating`` and
    ``kcore`` apply to every format, the column options only to tables.
    """
    if format is not None and format not in FORMATS:
        raise ConfigError(
            f"--format {format!r}: unknown format; choose one of {', '.join(FORMATS)}"
        )
    path = Path(path)
    _check_file(path)
    if format is None:
        format = _EXTENSION_FORMATS.get(path.suffix.lower())
        if format is None:
            raise DataError(
                f"{path}: cannot tell the format from the extension {path.suffix or '(none)'!r}; "
                f"pass --format ({', '.join(FORMATS)})"
            )
    if format == "table":
        return read_table(path, **table_options)
    _reject_table_only_options(table_options, format)
    reader = read_sequence_file if format == "seq" else read_inter_file
    shared = {key: value for key, value in table_options.items() if key in ("min_rating", "kcore")}
    return reader(path, **shared)


# --------------------------------------------------------------------------------------------
# Shared steps
# --------------------------------------------------------------------------------------------


def _check_options(min_rating, kcore) -> None:
    if min_rating is not None and (
        isinstance(min_rating, bool) or not isinstance(min_rating, Real)
    ):
        raise ConfigError(f"min_rating must be a number, got {min_rating!r}")
    if isinstance(kcore, bool) or not isinstance(kcore, (int, np.integer)) or kcore < 0:
        raise ConfigError(f"kcore must be an integer >= 0, got {kcore!r}")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a file")


def _reject_table_only_options(options: dict, format: str) -> None:
    # Callers such as the CLI pass every option with its default; only a changed value means
    # the user asked for something this format cannot honour.
    defaults = inspect.signature(read_table).parameters
    for key, value in options.items():
        if key in ("min_rating", "kcore"):
            continue
        if key not in defaults:
            raise TypeError(f"load_interactions() got an unexpected keyword argument {key!r}")
        if value != defaults[key].default:
            raise ConfigError(
                f"option {key}={value!r} only applies to --format table, not {format}"
            )


def _read_lines(path: Path) -> list[str]:
    """Decode a whole text file, reporting undecodable or binary content by line number."""
    name = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{name}: cannot read: {exc.strerror or exc}") from None
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    nul = data.find(b"\x00")
    if nul != -1:
        line = data.count(b"\n", 0, nul) + 1
        raise DataError(f"{name}:{line}: binary data (NUL byte); expected a UTF-8 text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(_decode_error_message(name, data, exc)) from None
    # str.splitlines would also split on form feeds and Unicode separators and shift line numbers.
    return [line.rstrip("\r") for line in text.split("\n")]


def _decode_error_message(name: str, data: bytes, exc: UnicodeDecodeError) -> str:
    line = data.count(b"\n", 0, exc.start) + 1
    return (
        f"{name}:{line}: not valid UTF-8 (byte 0x{data[exc.start]:02x}); convert the file to UTF-8"
    )


def _parse_floats(values: list[str], linenos: list[int], name: str, column: str) -> np.ndarray:
    try:
        parsed = np.array(values, dtype=float)
    except ValueError:
        parsed = np.array([_float_or_nan(value) for value in values])
    bad = np.flatnonzero(np.isnan(parsed))
    if bad.size:
        first = int(bad[0])
        raise DataError(
            f"{name}:{linenos[first]}: column {column}: expected a number, "
            f"got {values[first].strip()!r}"
        )
    return parsed


def _float_or_nan(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return float("nan")


def _from_frame(
    frame: pd.DataFrame, name: str, *, min_rating, kcore: int, time: str | None
) -> Interactions:
    """Filter a ``user``/``item`` (+ ``rating``, ``time``) frame in file order and build
    sequences."""
    notes: list[str] = []
    if min_rating is not None:
        keep = frame["rating"].to_numpy() >= min_rating
        dropped = int((~keep).sum())
        if dropped:
            notes.append(f"dropped {dropped} interactions with rating below {min_rating}")
            frame = frame[keep]
    if kcore > 0:
        frame = _kcore(frame, kcore, name, notes)
    if frame.empty:
        raise DataError(f"{name}: no interactions left after filtering ({'; '.join(notes)})")
    return _finish(_frame_to_sequences(frame, time), name, notes)


def _kcore(frame: pd.DataFrame, k: int, name: str, notes: list[str]) -> pd.DataFrame:
    """Keep the largest subset in which every user and item has at least ``k`` interactions.

    Removing all under-threshold users and items at once per round reaches the same fixed point
    as removing them one by one: a node below ``k`` now stays below ``k`` in any subset.
    """
    users_before, items_before = frame["user"].nunique(), frame["item"].nunique()
    while not frame.empty:
        user_counts = frame.groupby("user", sort=False)["user"].transform("size")
        item_counts = frame.groupby("item", sort=False)["item"].transform("size")
        keep = (user_counts >= k) & (item_counts >= k)
        if keep.all():
            break
        frame = frame[keep]
    if frame.empty:
        raise DataError(f"{name}: no interactions left after the {k}-core filter")
    removed_users = users_before - frame["user"].nunique()
    removed_items = items_before - frame["item"].nunique()
    if removed_users or removed_items:
        notes.append(f"{k}-core filter removed {removed_users} users and {removed_items} items")
    return frame


def _frame_to_sequences(frame: pd.DataFrame, time: str | None) -> dict[str, list[str]]:
    """Group by user in order of first appearance, each user's items stably sorted by time."""
    codes, users = pd.factorize(frame["user"], sort=False)
    if time is None:
        order = np.argsort(codes, kind="stable")
    else:
        # lexsort is stable, so equal timestamps keep file order.
        order = np.lexsort((frame[time].to_numpy(), codes))
    items = frame["item"].to_numpy()[order].tolist()
    ends = np.cumsum(np.bincount(codes, minlength=len(users))).tolist()
    sequences = {}
    start = 0
    for user, end in zip(users.tolist(), ends, strict=True):
        sequences[user] = items[start:end]
        start = end
    return sequences


def _finish(sequences: dict[str, list[str]], name: str, notes: list[str]) -> Interactions:
    kept = {user: seq for user, seq in sequences.items() if len(seq) >= MIN_ITEMS_PER_USER}
    skipped = len(sequences) - len(kept)
    if skipped:
        notes.append(
            f"skipped {skipped} users with fewer than {MIN_ITEMS_PER_USER} items "
            f"(leave-one-out needs {MIN_ITEMS_PER_USER})"
        )
    if not kept:
        raise DataError(
            f"{name}: no user has at least {MIN_ITEMS_PER_USER} items "
            f"(leave-one-out needs {MIN_ITEMS_PER_USER})"
        )
    return Interactions(sequences=kept, source=name, skipped_users=skipped, notes=notes)


# --------------------------------------------------------------------------------------------
# RecBole .inter helpers
# --------------------------------------------------------------------------------------------


def _parse_inter_header(header: str, name: str, lineno: int) -> list[str]:
    columns: list[str] = []
    for position, raw in enumerate(header.split("\t"), 1):
        field = raw.strip()
        column, colon, kind = field.partition(":")
        if not colon or not column or not kind:
            raise DataError(
                f"{name}:{lineno}: header field {position} {field!r} has no type; expected "
                f"'name:type' with type one of {', '.join(_INTER_TYPES)}"
            )
        if kind not in _INTER_TYPES:
            raise DataError(
                f"{name}:{lineno}: header field {field!r} has unknown type {kind!r}; "
                f"expected one of {', '.join(_INTER_TYPES)}"
            )
        if column in columns:
            raise DataError(f"{name}:{lineno}: header field name {column!r} appears twice")
        columns.append(column)
    return columns


def _pick_inter_field(columns: list[str], suffix: str, name: str, lineno: int) -> int:
    if suffix in columns:
        return columns.index(suffix)
    matches = [i for i, column in enumerate(columns) if column.endswith(suffix)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        found = ", ".join(columns[i] for i in matches)
        raise DataError(
            f"{name}:{lineno}: several header fields could be {suffix} ({found}); "
            f"name one '{suffix}'"
        )
    raise DataError(f"{name}:{lineno}: no {suffix} field in header (fields: {', '.join(columns)})")


# --------------------------------------------------------------------------------------------
# Table helpers
# --------------------------------------------------------------------------------------------


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


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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
