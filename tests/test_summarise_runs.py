"""scripts/summarise_runs.py on hand-written run folders."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]


def write_run(folder: Path, curve: list[float], test_ndcg: float | None) -> None:
    folder.mkdir(parents=True)
    pd.DataFrame(
        {
            "epoch": range(1, len(curve) + 1),
            "step": [10 * (e + 1) for e in range(len(curve))],
            "seconds": 1.0,
            "loss": 5.0,
            "valid_ndcg@20": curve,
            "valid_recall@20": [2 * v for v in curve],
        }
    ).to_csv(folder / "history.csv", index=False)
    if test_ndcg is not None:
        test = {"recall@10": 0.1, "ndcg@10": 0.05, "recall@20": 0.2, "ndcg@20": test_ndcg}
        (folder / "metrics.json").write_text(json.dumps({"test": test}))


def summarise(argv: list[str]) -> int:
    """The script's exit status."""
    old = sys.argv
    sys.argv = ["summarise_runs.py", *argv]
    try:
        runpy.run_path(str(REPO / "scripts" / "summarise_runs.py"), run_name="__main__")
    except SystemExit as done:
        return int(done.code or 0)
    finally:
        sys.argv = old
    return 0


def test_runs_are_summarised_at_their_best_validation_epoch_and_averaged_over_seeds(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs / "a-seed0", [0.1, 0.3, 0.2], 0.25)
    write_run(runs / "a-seed1", [0.2, 0.1], 0.35)
    write_run(runs / "b", [0.05, 0.06], None)  # still running
    assert summarise([str(runs), "--out", str(tmp_path / "out")]) == 0
    table = pd.read_csv(tmp_path / "out" / "runs.csv").set_index(["variant", "seed"])
    assert table.loc[("a", 0), "best_epoch"] == 2 and table.loc[("a", 1), "best_epoch"] == 1
    assert not table.loc[("b", 0), "finished"] and pd.isna(table.loc[("b", 0), "test_ndcg@20"])
    variants = pd.read_csv(tmp_path / "out" / "variants.csv").set_index("variant")
    assert variants.loc["a", "seeds"] == 2
    assert variants.loc["a", "test_ndcg@20_mean"] == pytest.approx(0.30)
    assert variants.loc["a", "valid_ndcg@20_mean"] == pytest.approx(0.25)
    assert (tmp_path / "out" / "curves.png").stat().st_size > 0


def test_a_folder_without_runs_is_an_error(tmp_path, capsys):
    assert summarise([str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "no run folder" in capsys.readouterr().err


def test_earlier_rows_join_and_variants_are_paired_over_common_seeds(tmp_path):
    old = tmp_path / "old"
    write_run(old / "a-seed0", [0.10], 0.10)
    write_run(old / "b-seed0", [0.12], 0.13)
    assert summarise([str(old), "--out", str(tmp_path / "old-out")]) == 0
    new = tmp_path / "new"
    for seed, (a, b) in enumerate([(0.20, 0.23), (0.30, 0.32)], start=1):
        write_run(new / f"a-seed{seed}", [a], a)
        write_run(new / f"b-seed{seed}", [b], b)
    write_run(new / "b-seed3", [0.5], 0.5)  # no partner: left out of the pairs
    earlier = str(tmp_path / "old-out" / "runs.csv")
    out = tmp_path / "out"
    assert summarise([str(new), "--out", str(out), "--earlier", earlier, "--paired", "a"]) == 0
    runs = pd.read_csv(out / "runs.csv")
    assert sorted(runs.query("variant == 'a'")["seed"]) == [0, 1, 2]
    table = pd.read_csv(out / "paired.csv").set_index("metric")
    assert (table["variant"] == "b").all() and (table["pairs"] == 3).all()
    assert table.loc["test_ndcg@20", "difference"] == pytest.approx(
        (0.03 + 0.03 + 0.02) / 3, rel=1e-3
    )
    assert 0 < table.loc["test_ndcg@20", "p"] < 0.05


def test_pairing_against_an_unknown_variant_is_an_error(tmp_path, capsys):
    write_run(tmp_path / "runs" / "a", [0.1], 0.1)
    argv = [str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--paired", "zzz"]
    assert summarise(argv) == 2
    assert "--paired zzz" in capsys.readouterr().err


def test_runs_without_test_metrics_are_paired_on_validation_only(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs / "a-seed0", [0.1], None)
    write_run(runs / "b-seed0", [0.2], None)
    out = tmp_path / "out"
    assert summarise([str(runs), "--out", str(out), "--paired", "a"]) == 0
    table = pd.read_csv(out / "paired.csv")
    assert list(table["metric"]) == ["valid_ndcg@20"]
    assert (table["pairs"] == 0).all()  # neither run has finished


def test_labelled_compare_grids_take_their_test_metrics_from_results_csv(tmp_path):
    for label, shift in (("preset", 0.0), ("tuned", 0.01)):
        grid = tmp_path / label
        rows = []
        for seed in (0, 1):
            ndcg = 0.2 + shift + 0.001 * seed
            write_run(grid / "runs" / f"sigma-seed{seed}", [ndcg], None)
            rows.append(
                {"prior": "sigma", "seed": seed, "status": "ok", "recall@10": 0.1,
                 "ndcg@10": 0.05, "recall@20": 0.3, "ndcg@20": ndcg,
                 "run_dir": f"runs/sigma-seed{seed}"}
            )  # fmt: skip
        pd.DataFrame(rows).to_csv(grid / "results.csv", index=False)
    out = tmp_path / "out"
    argv = [f"preset={tmp_path / 'preset' / 'runs'}", f"tuned={tmp_path / 'tuned' / 'runs'}"]
    argv += ["--compare", str(tmp_path / "preset" / "results.csv")]
    argv += ["--compare", str(tmp_path / "tuned" / "results.csv")]
    assert summarise([*argv, "--out", str(out), "--paired", "sigma@preset"]) == 0
    runs = pd.read_csv(out / "runs.csv").set_index(["variant", "seed"])
    assert runs["finished"].all()
    assert runs.loc[("sigma@tuned", 1), "test_ndcg@20"] == pytest.approx(0.211)
    table = pd.read_csv(out / "paired.csv").set_index("metric")
    assert table.loc["test_ndcg@20", "variant"] == "sigma@tuned"
    assert table.loc["test_ndcg@20", "difference"] == pytest.approx(0.01)


def test_a_compare_csv_without_its_columns_is_an_error(tmp_path, capsys):
    write_run(tmp_path / "runs" / "a", [0.1], None)
    bad = tmp_path / "results.csv"
    bad.write_text("prior,seed\nsigma,0\n")
    argv = [str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--compare", str(bad)]
    assert summarise(argv) == 2
    assert f"--compare {bad}: not a compare results.csv" in capsys.readouterr().err
