"""The ``seq`` format: one user per line, ``user item item ...`` in time order (the
SASRec/SIGMA format)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sigma_pyro.data.interactions import Interactions
from sigma_pyro.data.readers.common import (
    _check_file,
    _check_options,
    _finish,
    _frame_to_sequences,
    _kcore,
    _read_lines,
)
from sigma_pyro.errors import DataError


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
