import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sigma_pyro.data.readers import (
    load_interactions,
    read_inter_file,
    read_sequence_file,
    read_table,
)
from sigma_pyro.errors import ConfigError, DataError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def expect_error(pattern_parts, call, *args, **kwargs):
    """The message must be a single line mentioning every part (file name, line, column...)."""
    with pytest.raises(DataError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for part in pattern_parts:
        assert part in message, f"{part!r} not in {message!r}"
    return message


# ------------------------------------------------------------------------------ seq format


def test_seq_parses_and_keeps_item_zero(tmp_path):
    path = write(tmp_path / "data.txt", "1 0 2 3\n\n2 5 0 7 8\r\n   \n3 9 9 10\n")
    data = read_sequence_file(path)
    assert data.sequences == {
        "1": ["0", "2", "3"],
        "2": ["5", "0", "7", "8"],
        "3": ["9", "9", "10"],
    }
    assert data.skipped_users == 0 and data.notes == []
    assert data.source == str(path)
    assert list(data.sequences) == ["1", "2", "3"]


def test_seq_skips_short_users_and_counts_them(tmp_path):
    path = write(tmp_path / "data.txt", "a 1 2 3\nb 1\nc 1 2\nd 4 5 6 7\n")
    data = read_sequence_file(path)
    assert list(data.sequences) == ["a", "d"]
    assert data.skipped_users == 2
    assert any("skipped 2 users with fewer than 3 items" in note for note in data.notes)


def test_seq_user_without_items(tmp_path):
    path = write(tmp_path / "data.txt", "a 1 2 3\n\nlonely\n")
    expect_error(["data.txt:3:", "got 1 field"], read_sequence_file, path)


def test_seq_duplicate_user_names_both_lines(tmp_path):
    path = write(tmp_path / "data.txt", "a 1 2 3\nb 1 2 3\na 4 5 6\n")
    expect_error(["data.txt:3:", "line 1", "'a'"], read_sequence_file, path)


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_seq_empty_file(tmp_path, content):
    path = tmp_path / "empty.txt"
    path.write_bytes(content)
    expect_error(["empty.txt", "empty"], read_sequence_file, path)


@pytest.mark.parametrize("payload", [b"c 1 \xff\xfe 3\n", b"c 1 2\x00 3\n"])
def test_seq_binary_or_non_utf8(tmp_path, payload):
    path = tmp_path / "data.txt"
    path.write_bytes(b"a 1 2 3\nb 1 2 3\n" + payload)
    expect_error(["data.txt:3:"], read_sequence_file, path)


def test_seq_all_users_too_short(tmp_path):
    path = write(tmp_path / "short.txt", "a 1 2\nb 3\n")
    expect_error(["short.txt", "3 items"], read_sequence_file, path)


def test_seq_has_no_ratings(tmp_path):
    path = write(tmp_path / "data.txt", "a 1 2 3\n")
    expect_error(["data.txt", "rating"], read_sequence_file, path, min_rating=3)


def test_seq_reads_beauty():
    path = SHARED_DATA / "Beauty.txt"
    if not path.exists():
        pytest.skip(f"{path} not available")
    data = read_sequence_file(path)
    assert data.num_users == 22363
    assert data.num_interactions == 198502


def test_real_office_products():
    path = SHARED_DATA / "Office_Products.txt"
    if not path.exists():
        pytest.skip(f"{path} not available")
    data = load_interactions(path)
    assert data.num_users == 4905
    assert data.num_interactions == 53258
    assert data.skipped_users == 0


token = st.text(
    alphabet=st.characters(categories=("L", "N", "P", "S")), min_size=1, max_size=6
).filter(lambda t: not any(ch.isspace() for ch in t))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(token, st.lists(token, min_size=1, max_size=8)),
        unique_by=lambda u: u[0],
        max_size=12,
    )
)
def test_seq_roundtrip_property(users):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "prop.txt"
        write(path, "".join(f"{user} {' '.join(items)}\n" for user, items in users))
        expected = {user: items for user, items in users if len(items) >= 3}
        if not expected:
            with pytest.raises(DataError):
                read_sequence_file(path)
            return
        data = read_sequence_file(path)
    assert data.sequences == expected
    assert list(data.sequences) == list(expected)
    assert data.skipped_users == len(users) - len(expected)


# ------------------------------------------------------------------------------ .inter format

INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


def test_inter_sorts_by_timestamp_stably(tmp_path):
    rows = [
        ("u1", "0", 5, 30),
        ("u2", "x", 4, 1),
        ("u1", "a", 4, 10),
        ("u1", "b", 3, 10),
        ("u1", "c", 1, 20),
        ("u2", "y", 5, 3),
        ("u2", "z", 5, 2),
    ]
    text = INTER_HEADER + "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows)
    data = read_inter_file(write(tmp_path / "d.inter", text))
    assert data.sequences == {"u1": ["a", "b", "c", "0"], "u2": ["x", "z", "y"]}


def test_inter_without_timestamp_keeps_file_order(tmp_path):
    text = "item_id:token\tuser_id:token\n3\tu\n1\tu\n2\tu\n"
    assert read_inter_file(write(tmp_path / "d.inter", text)).sequences == {"u": ["3", "1", "2"]}


def test_inter_accepts_suffixed_field_names(tmp_path):
    text = "session_user_id:token\tmy_item_id:token\ttimestamp:float\nu\tb\t2\nu\ta\t1\nu\tc\t3\n"
    assert read_inter_file(write(tmp_path / "d.inter", text)).sequences == {"u": ["a", "b", "c"]}


@pytest.mark.parametrize(
    "text, parts",
    [
        ("uid:token\titem_id:token\nu\ta\n", ["d.inter:1:", "user_id"]),
        ("user_id:token\titem:token\nu\ta\n", ["d.inter:1:", "item_id"]),
        (
            "a_user_id:token\tb_user_id:token\titem_id:token\n",
            ["d.inter:1:", "a_user_id", "b_user_id"],
        ),
        ("user_id:token\titem_id:token\titem_id:float\n", ["d.inter:1:", "'item_id'", "twice"]),
        ("user_id:token\titem_id\n", ["d.inter:1:", "'item_id'", "no type"]),
        ("user_id:token\titem_id:int\n", ["d.inter:1:", "'int'"]),
        (INTER_HEADER + "u\ta\t5\t1\nu\tb\t5\tlater\n", ["d.inter:3:", "timestamp", "'later'"]),
        (INTER_HEADER + "u\ta\tgood\t1\n", ["d.inter:2:", "rating", "'good'"]),
        (INTER_HEADER + "u\ta\t5\t1\n\nu\tb\t5\n", ["d.inter:4:", "expected 4", "got 3"]),
        (INTER_HEADER + "u\t\t5\t1\n", ["d.inter:2:", "item_id"]),
        (INTER_HEADER, ["d.inter", "no interactions"]),
        ("", ["d.inter", "empty"]),
    ],
)
def test_inter_errors(tmp_path, text, parts):
    expect_error(parts, read_inter_file, write(tmp_path / "d.inter", text))


def test_inter_min_rating(tmp_path):
    text = INTER_HEADER + "".join(f"u\t{i}\t{r}\t{i}\n" for i, r in enumerate([5, 1, 4, 2, 3]))
    data = read_inter_file(write(tmp_path / "d.inter", text), min_rating=3)
    assert data.sequences == {"u": ["0", "2", "4"]}
    assert any("2 interactions" in note for note in data.notes)


def test_inter_min_rating_needs_rating(tmp_path):
    path = write(tmp_path / "d.inter", "user_id:token\titem_id:token\nu\ta\n")
    expect_error(["d.inter", "rating"], read_inter_file, path, min_rating=3)


# ------------------------------------------------------------------------------ tables


def test_csv_sorts_and_keeps_ids_as_strings(tmp_path):
    text = "user_id,item_id,timestamp\n7,007,3\n7,0,1\n\n8,NA,5\n7,x,2\n8,y,5\n8,z,4\n"
    data = read_table(write(tmp_path / "t.csv", text))
    assert data.sequences == {"7": ["0", "x", "007"], "8": ["z", "NA", "y"]}


def test_tsv_with_datetimes_and_custom_columns(tmp_path):
    text = "who\twhat\twhen\na\tp\t2021-03-01 10:00\na\tq\t2021-01-01\na\tr\t2021-02-01T00:00:00Z\n"
    data = read_table(
        write(tmp_path / "t.tsv", text), user_col="who", item_col="what", time_col="when"
    )
    assert data.sequences == {"a": ["q", "r", "p"]}


def test_parquet(tmp_path):
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame(
        {
            "user_id": [1, 1, 2, 1, 2, 2],
            "item_id": [0, 5, 6, 7, 8, 9],
            "timestamp": pd.to_datetime(
                ["2020-01-03", "2020-01-01", "2020-01-01", "2020-01-02", "2020-01-03", "2020-01-02"]
            ),
        }
    )
    path = tmp_path / "t.parquet"
    frame.to_parquet(path)
    assert load_interactions(path).sequences == {"1": ["5", "7", "0"], "2": ["6", "9", "8"]}


def test_parquet_null_id_names_row(tmp_path):
    pytest.importorskip("pyarrow")
    path = tmp_path / "t.pq"
    pd.DataFrame({"user_id": ["a", None], "item_id": ["x", "y"], "timestamp": [1, 2]}).to_parquet(
        path
    )
    expect_error(["t.pq", "row 2", "user_id"], read_table, path)


def test_not_a_parquet_file(tmp_path):
    pytest.importorskip("pyarrow")
    path = write(tmp_path / "t.parquet", "user_id,item_id\n")
    expect_error(["t.parquet", "Parquet"], read_table, path)


def test_table_sep_override_and_no_time(tmp_path):
    path = write(tmp_path / "t.csv", "user_id;item_id\nu;c\nu;a\nu;b\n")
    assert read_table(path, sep=";", time_col=None).sequences == {"u": ["c", "a", "b"]}


@pytest.mark.parametrize(
    "text, options, parts",
    [
        (
            "user_id,item_id,timestamp\nu,a,1\nu,b,2\nu,c,soon\n",
            {},
            ["t.csv:4:", "'timestamp'", "'soon'"],
        ),
        ("user_id,item_id,timestamp\nu,a,1\n\nu,b,2\nu,c,soon\n", {}, ["t.csv:5:", "'soon'"]),
        ("user_id,item_id,timestamp\nu,a,1\nu,b,\n", {}, ["t.csv:3:", "'timestamp'"]),
        (
            "user,item_id,timestamp\nu,a,1\n",
            {},
            ["t.csv", "'user_id'", "'user', 'item_id', 'timestamp'"],
        ),
        ("user_id,item_id\nu,a\n", {}, ["t.csv", "'timestamp'", "time_col=None"]),
        ("user_id,item_id,timestamp\nu,a,1\nu,b,2,9\n", {}, ["t.csv:3:", "got 4"]),
        ("user_id,item_id,timestamp\nu,,1\n", {}, ["t.csv:2:", "'item_id'", "empty"]),
        (
            "user_id,item_id,score\nu,a,1\nu,b,high\n",
            {"rating_col": "score", "min_rating": 1, "time_col": None},
            ["t.csv:3:", "'score'"],
        ),
        ("user_id,item_id,timestamp\nu,a,1\n", {"min_rating": 1}, ["t.csv", "rating_col"]),
        ("", {}, ["t.csv", "empty"]),
        ("user_id,item_id,timestamp\n\n", {}, ["t.csv", "no interactions"]),
    ],
)
def test_table_errors(tmp_path, text, options, parts):
    expect_error(parts, read_table, write(tmp_path / "t.csv", text), **options)


def test_table_non_utf8_names_line(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"user_id,item_id,timestamp\nu,a,1\nu,b\xff,2\n")
    expect_error(["t.csv:3:", "UTF-8"], read_table, path)


def test_table_unknown_extension_needs_sep(tmp_path):
    path = write(tmp_path / "t.dat", "user_id,item_id\n")
    expect_error(["t.dat", "sep"], read_table, path)


def test_table_min_rating_defaults_to_rating_column(tmp_path):
    text = "user_id,item_id,rating,timestamp\n" + "".join(
        f"u,{i},{r},{i}\n" for i, r in enumerate([1, 5, 4, 2, 5])
    )
    data = read_table(write(tmp_path / "t.csv", text), min_rating=4)
    assert data.sequences == {"u": ["1", "2", "4"]}


# ------------------------------------------------------------------------------ k-core


def reference_kcore(pairs, k):
    """Remove one under-threshold node at a time, the textbook definition."""
    pairs = list(pairs)
    while True:
        users, items = {}, {}
        for u, i in pairs:
            users[u] = users.get(u, 0) + 1
            items[i] = items.get(i, 0) + 1
        weak = next(((0, u) for u, n in users.items() if n < k), None) or next(
            ((1, i) for i, n in items.items() if n < k), None
        )
        if weak is None:
            return pairs
        pairs = [p for p in pairs if p[weak[0]] != weak[1]]


def test_kcore_cascades(tmp_path):
    # Dropping item z leaves user c with 2 items, then items x and y with 2 users, then users a
    # and b with 1 item; only d, e, f survive.
    lines = ["a x y w", "b x y w", "c x y z", "d w v u", "e w v u", "f u w v"]
    path = write(tmp_path / "data.txt", "\n".join(lines) + "\n")
    data = read_sequence_file(path, kcore=3)
    expected = reference_kcore(
        [(line.split()[0], item) for line in lines for item in line.split()[1:]], 3
    )
    assert data.sequences == {"d": ["w", "v", "u"], "e": ["w", "v", "u"], "f": ["u", "w", "v"]}
    assert sorted((u, i) for u, seq in data.sequences.items() for i in seq) == sorted(expected)
    assert any("3-core" in note for note in data.notes)


def test_kcore_matches_reference_on_random_data(tmp_path):
    rng = np.random.default_rng(3)
    rows = [(f"u{rng.integers(40)}", f"i{rng.zipf(1.6) % 60}", t) for t in range(600)]
    text = "user_id:token\titem_id:token\ttimestamp:float\n" + "".join(
        f"{u}\t{i}\t{t}\n" for u, i, t in rows
    )
    data = read_inter_file(write(tmp_path / "r.inter", text), kcore=4)
    expected = reference_kcore([(u, i) for u, i, _ in rows], 4)
    expected_sequences = {}
    for u, i in expected:
        expected_sequences.setdefault(u, []).append(i)
    assert data.sequences == {u: s for u, s in expected_sequences.items() if len(s) >= 3}


def test_kcore_removing_everything(tmp_path):
    path = write(tmp_path / "data.txt", "a 1 2 3\nb 4 5 6\n")
    expect_error(["data.txt", "2-core"], read_sequence_file, path, kcore=2)


@pytest.mark.parametrize("options", [{"kcore": -1}, {"kcore": 1.5}, {"min_rating": "high"}])
def test_bad_filter_options(tmp_path, options):
    path = write(tmp_path / "data.txt", "a 1 2 3\n")
    with pytest.raises(ConfigError):
        read_sequence_file(path, **options)


# ------------------------------------------------------------------------------ load_interactions


@pytest.mark.parametrize(
    "name, text",
    [
        ("d.txt", "u 1 2 3\n"),
        ("d.seq", "u 1 2 3\n"),
        ("d.inter", "user_id:token\titem_id:token\nu\t1\nu\t2\nu\t3\n"),
        ("d.csv", "user_id,item_id,timestamp\nu,1,1\nu,2,2\nu,3,3\n"),
        ("d.TSV", "user_id\titem_id\ttimestamp\nu\t1\t1\nu\t2\t2\nu\t3\t3\n"),
        ("d.tab", "user_id\titem_id\ttimestamp\nu\t1\t1\nu\t2\t2\nu\t3\t3\n"),
    ],
)
def test_format_inferred_from_extension(tmp_path, name, text):
    assert load_interactions(write(tmp_path / name, text)).sequences == {"u": ["1", "2", "3"]}


def test_explicit_format_overrides_extension(tmp_path):
    path = write(tmp_path / "d.log", "u 1 2 3\n")
    expect_error(["d.log", "--format"], load_interactions, path)
    assert load_interactions(path, format="seq").sequences == {"u": ["1", "2", "3"]}


def test_missing_file(tmp_path):
    expect_error(["nope.txt", "no such file"], load_interactions, tmp_path / "nope.txt")


def test_unknown_format_is_config_error(tmp_path):
    path = write(tmp_path / "d.txt", "u 1 2 3\n")
    with pytest.raises(ConfigError, match="--format"):
        load_interactions(path, format="json")


def test_table_options_rejected_for_other_formats(tmp_path):
    path = write(tmp_path / "d.txt", "u 1 2 3\n")
    # Defaults are what a CLI forwards when the user did not ask for anything.
    assert load_interactions(path, user_col="user_id", sep=None, kcore=0).num_users == 1
    with pytest.raises(ConfigError, match="user_col"):
        load_interactions(path, user_col="uid")
