"""The ``inter`` format: RecBole atomic ``.inter`` files (tab separated, typed ``name:type``
header)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sigma_pyro.data.interactions import Interactions
from sigma_pyro.data.readers.common import _check_file, _check_options, _from_frame, _read_lines
from sigma_pyro.errors import DataError

_INTER_TYPES = ("token", "token_seq", "float", "float_seq")


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
