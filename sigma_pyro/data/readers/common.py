"""What every reader shares: option and file checks, UTF-8 decoding with line numbers, the
rating and k-core filters, and the final grouping into per-user sequences.

Every problem with the input is raised as a one-line :class:`DataError` naming the file and the
line (or column), because these messages are what a CLI user sees instead of a traceback.
"""

from __future__ import annotations

import codecs
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


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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
