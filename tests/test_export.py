"""Recommendations for many users at once (``recommend --all-users/--users --out``) and what
happens to ids a model does not know: a warning naming them, the rest answered, and a
one-line error when nothing is left."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from helpers import run_main
from sigma_pyro.api import SigmaRecommender
from sigma_pyro.errors import DataError, SigmaPyroWarning

SETTINGS = dict(
    synthetic_users=150,
    synthetic_items=60,
    synthetic_categories=4,
    hidden_size=16,
    num_heads=2,
    max_seq_length=10,
    batch_size=64,
    epochs=1,
    progress=False,
)
K = 4


def assert_user_error(code: int, stderr: str, *needles: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in stderr, stderr
    assert len(lines) >= 1 and lines[-1].startswith("sigma-pyro: error: "), stderr
    assert sum("error" in line for line in lines) == 1, stderr
    for needle in needles:
        assert needle in lines[-1], (needle, lines[-1])


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model")
    SigmaRecommender.from_preset("synthetic", **SETTINGS).fit(out_dir=out, log=lambda line: None)
    return out


@pytest.fixture(scope="module")
def data(model) -> SigmaRecommender:
    rec = SigmaRecommender.load(model)
    rec.load_data()
    return rec


def histories(rec: SigmaRecommender) -> dict[str, set[str]]:
    d = rec.dataset
    return {u: set(d.items.decode(s)) for u, s in zip(d.users, d.sequences, strict=True)}


def check_table(table: pd.DataFrame, rec: SigmaRecommender, users: list[str]) -> None:
    assert list(table.columns) == ["user", "rank", "item", "score"]
    assert len(table) == len(users) * K
    assert table["user"].drop_duplicates().tolist() == users
    ranks = table.groupby("user", sort=False)["rank"].apply(list)
    assert all(r == list(range(1, K + 1)) for r in ranks)
    assert set(table["item"]) <= set(rec.dataset.items.raw_ids)
    seen = histories(rec)
    pairs = zip(table["user"], table["item"], strict=True)
    assert not any(item in seen[user] for user, item in pairs), "a history item recommended"
    for _, rows in table.groupby("user"):
        assert rows["score"].is_monotonic_decreasing
        assert rows["item"].is_unique


@pytest.mark.parametrize("name", ["all.csv", "all.parquet"])
def test_all_users_to_a_table(name, model, data, tmp_path):
    if name.endswith(".parquet"):
        pytest.importorskip("pyarrow")
    out = tmp_path / name
    code, stdout, err = run_main(
        ["recommend", "--model", model, "--all-users", "--out", out, "-k", K]
    )
    assert code == 0, err
    assert "\r" not in err, "no progress bar where stderr is not a terminal"
    table = pd.read_csv(out, dtype={"user": str, "item": str}) if name.endswith(".csv") else None
    table = pd.read_parquet(out) if table is None else table
    check_table(table, data, data.dataset.users)
    assert json.loads(stdout)["rows"] == len(table)
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_api_gives_the_same_table_in_any_chunking(model, data):
    whole = data.recommend_all(K)
    check_table(whole, data, data.dataset.users)
    chunked = SigmaRecommender.load(model, eval_batch_size=7)
    pd.testing.assert_frame_equal(chunked.recommend_all(K), whole, atol=1e-5, rtol=0)
    # recommend() ranks with the same loop.
    some = data.dataset.users[:3]
    for user, ranked in data.recommend_users(some, K).items():
        assert [item for item, _ in ranked] == whole.loc[whole["user"] == user, "item"].tolist()


def test_users_file_with_an_unknown_user(model, data, tmp_path):
    users = tmp_path / "users.txt"
    users.write_text("u3\nnobody\n\nu7\n")
    out = tmp_path / "some.csv"
    argv = ["recommend", "--model", model, "--users", users, "--out", out, "-k", K]
    code, _, err = run_main(argv)
    assert code == 0, err
    assert "sigma-pyro: warning: 1 user not in" in err and "'nobody'" in err
    check_table(pd.read_csv(out, dtype={"user": str, "item": str}), data, ["u3", "u7"])


def test_users_file_of_unknown_users_is_an_error(model, tmp_path):
    users = tmp_path / "users.txt"
    users.write_text("nobody\nnoone\n")
    out = tmp_path / "none.csv"
    code, _, err = run_main(["recommend", "--model", model, "--users", users, "--out", out])
    assert_user_error(code, err, "'nobody'", "'noone'")
    assert not out.exists()


@pytest.mark.parametrize("name", ["recs.json", "recs"])
def test_unknown_table_extension_is_an_error(name, model, tmp_path):
    code, _, err = run_main(
        ["recommend", "--model", model, "--all-users", "--out", tmp_path / name]
    )
    assert_user_error(code, err, ".csv", ".parquet")


def test_table_flags_need_an_out_file(model):
    code, _, err = run_main(["recommend", "--model", model, "--all-users"])
    assert_user_error(code, err, "--out")


def test_unknown_items_in_a_history_are_named_and_skipped(model, data):
    items = data.dataset.items.raw_ids
    history = f"{items[0]} nosuchitem {items[1]}"
    code, stdout, err = run_main(["recommend", "--model", model, "--history", history, "-k", K])
    assert code == 0, err
    assert err.strip() == "sigma-pyro: warning: 1 item unknown to the model, skipped: 'nosuchitem'"
    recommended = [e["item"] for e in json.loads(stdout)[history]]
    assert len(recommended) == K and not {items[0], items[1]} & set(recommended)


def test_many_unknown_items_are_counted(model, data):
    unknown = [f"x{i}" for i in range(12)]
    history = " ".join([data.dataset.items.raw_ids[0], *unknown])
    code, _, err = run_main(["recommend", "--model", model, "--history", history])
    assert code == 0, err
    (line,) = err.strip().splitlines()
    assert line.startswith("sigma-pyro: warning: 12 items unknown to the model")
    assert "'x0', 'x1', 'x2', 'x3', 'x4' and 7 more" in line


def test_a_history_of_unknown_items_is_an_error(model):
    code, _, err = run_main(["recommend", "--model", model, "--history", "nope1 nope2"])
    assert_user_error(code, err, "known", "'nope1'")


def test_unknown_users_among_known_ones(model, data):
    code, stdout, err = run_main(
        ["recommend", "--model", model, "--user", "u1", "--user", "nobody", "-k", K]
    )
    assert code == 0, err
    assert "'nobody'" in err and "warning" in err
    assert list(json.loads(stdout)) == ["u1"]


def test_the_api_warns_and_raises(data):
    with pytest.warns(SigmaPyroWarning, match="nosuchitem"):
        data.recommend([[data.dataset.items.raw_ids[0], "nosuchitem"]], K)
    with pytest.warns(SigmaPyroWarning, match="'nobody'"):
        assert list(data.recommend_all(K, users=["nobody", "u2"])["user"].unique()) == ["u2"]
    with pytest.raises(DataError, match="'nobody'"):
        data.recommend_users(["nobody"], K)
