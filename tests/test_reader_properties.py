"""Property tests for every reader: random valid files parse to exactly what was written, and
randomly damaged files either parse to something that survives a write/read round trip or
are rejected with DataError/ConfigError, never with any other exception."""

from __future__ import annotations

import importlib.util
import io
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sigma_pyro.data.readers import MIN_ITEMS_PER_USER, load_interactions
from sigma_pyro.errors import ConfigError, DataError

EXAMPLES = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Ids without whitespace are valid in every format; punctuation and symbols include the CSV
# quote and separator characters, so quoting is exercised too.
ids = st.text(alphabet=st.characters(categories=("L", "N", "P", "S")), min_size=1, max_size=5)
datasets = st.dictionaries(ids, st.lists(ids, min_size=1, max_size=7), min_size=1, max_size=8)
# Damage mostly hits files whose every user is kept, so that a damaged file can still parse.
kept_datasets = st.dictionaries(ids, st.lists(ids, min_size=3, max_size=7), min_size=1, max_size=8)


def rows_in_time_order(sequences: dict[str, list[str]]) -> list[tuple[str, str, int]]:
    """(user, item, timestamp) rows; timestamps are unique, so the order is unambiguous."""
    rows, clock = [], 0
    for user, items in sequences.items():
        for item in items:
            rows.append((user, item, clock))
            clock += 1
    return rows


def encode(fmt: str, sequences: dict[str, list[str]], order: list[int] | None = None) -> bytes:
    """A file in ``fmt`` holding ``sequences``; ``order`` shuffles the rows of row formats,
    which the readers must undo by timestamp."""
    if fmt == "seq":
        return "".join(f"{user} {' '.join(items)}\n" for user, items in sequences.items()).encode()
    rows = rows_in_time_order(sequences)
    if order is not None:
        rows = [rows[i] for i in order]
    if fmt == "inter":
        body = "".join(f"{user}\t{item}\t{time}\n" for user, item, time in rows)
        return ("user_id:token\titem_id:token\ttimestamp:float\n" + body).encode()
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    if fmt == "csv":
        return frame.to_csv(index=False).encode()
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


SUFFIX = {"seq": ".txt", "inter": ".inter", "csv": ".csv", "parquet": ".parquet"}


def read_bytes(fmt: str, data: bytes):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"data{SUFFIX[fmt]}"
        path.write_bytes(data)
        return load_interactions(path)


def expected_sequences(sequences: dict[str, list[str]]) -> dict[str, list[str]]:
    return {u: s for u, s in sequences.items() if len(s) >= MIN_ITEMS_PER_USER}


FORMATS = [
    "seq",
    "inter",
    "csv",
    pytest.param(
        "parquet",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("pyarrow") is None, reason="Parquet needs pyarrow"
        ),
    ),
]


@pytest.mark.parametrize("fmt", FORMATS)
@EXAMPLES
@given(data=st.data())
def test_valid_files_parse_to_what_was_written(fmt, data):
    sequences = data.draw(datasets)
    rows = sum(len(s) for s in sequences.values())
    order = None if fmt == "seq" else data.draw(st.permutations(range(rows)))
    expected = expected_sequences(sequences)
    if not expected:
        with pytest.raises(DataError):
            read_bytes(fmt, encode(fmt, sequences, order))
        return
    parsed = read_bytes(fmt, encode(fmt, sequences, order))
    assert parsed.sequences == expected
    assert parsed.skipped_users == len(sequences) - len(expected)


@st.composite
def mutations(draw, size: int):
    """Up to four random byte insertions, deletions and bit flips; inserted bytes favour
    separators, quotes, line ends and invalid UTF-8, which change a file's structure."""
    edits = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["insert", "delete", "flip"]))
        position = draw(st.integers(0, max(0, size - 1)))
        value = draw(st.one_of(st.sampled_from(b',\t\n\r" \x00\xff'), st.integers(0, 255)))
        edits.append((kind, position, value))
    return edits


def mutate(data: bytes, edits) -> bytes:
    out = bytearray(data)
    for kind, position, value in edits:
        position = min(position, len(out))
        if kind == "insert":
            out.insert(position, value)
        elif position < len(out):
            if kind == "delete":
                del out[position]
            else:
                out[position] ^= value or 1
    return bytes(out)


@pytest.mark.parametrize("fmt", FORMATS)
@EXAMPLES
@given(data=st.data())
def test_damaged_files_parse_consistently_or_fail_cleanly(fmt, data):
    sequences = data.draw(kept_datasets)
    original = encode(fmt, sequences)
    damaged = mutate(original, data.draw(mutations(len(original))))
    try:
        parsed = read_bytes(fmt, damaged)
    except (DataError, ConfigError) as err:
        assert "\n" not in str(err)
        return
    assert parsed.sequences, "a successful read has users"
    assert all(len(s) >= MIN_ITEMS_PER_USER for s in parsed.sequences.values())
    # Whatever was read must be data the reader itself can write back and read identically.
    again = read_bytes(fmt, encode(fmt, parsed.sequences))
    assert again.sequences == parsed.sequences
