"""What a run folder records about training: history.csv (one row per epoch, consistent over
--resume), curves.png, TensorBoard events when the package is there, and console output
fit for a log file (no carriage returns; --quiet)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.image import imread

from helpers import TINY_FLAGS, run_main
from sigma_pyro.api import SigmaRecommender
from sigma_pyro.inference.training import EpochRecord
from sigma_pyro.runtime.progress import progress_bar
from sigma_pyro.runtime.run_log import HISTORY_FILE, TrainingHistory, tensorboard_available

TINY = TINY_FLAGS
REPO = Path(__file__).resolve().parents[1]
TERMS = {"loss", "nll", "kl_z", "interest_nll", "orthogonality", "balance", "sharpness"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    code, _, err = run_main(["train", *TINY, "--no-progress", "--epochs", "3", "--out", out])
    assert code == 0, err
    return out


def history(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / HISTORY_FILE)


def test_history_has_a_row_per_epoch_with_every_term_and_metric(trained):
    rows = history(trained)
    assert rows["epoch"].tolist() == [1, 2, 3]
    assert rows["step"].is_monotonic_increasing and rows["step"].iloc[0] > 0
    assert {f"term_{t}" for t in TERMS} <= set(rows.columns)
    assert {"loss", "beta", "interest_weight", "seconds", "peak_rss_mb"} <= set(rows.columns)
    # The main head at every cut-off of the preset, the interest head at 20.
    assert {"valid_ndcg@10", "valid_recall@20", "valid_mrr", "interest_valid_ndcg@20"} <= set(
        rows.columns
    )
    assert not rows.isna().any().any()
    assert (rows["beta"] > 0).all() and rows["beta"].is_monotonic_increasing
    assert (rows["peak_rss_mb"] > 50).all()
    # The epoch lines and the early stopping saw the same numbers.
    metrics = json.loads((trained / "metrics.json").read_text())
    best = rows.loc[rows["valid_ndcg@10"].idxmax(), "epoch"]
    assert metrics["best_epoch"] == best


def test_history_on_the_python_api(trained, tmp_path):
    loaded = SigmaRecommender.load(trained)
    pd.testing.assert_frame_equal(loaded.history, history(trained))
    rec = SigmaRecommender.from_preset(
        "synthetic",
        synthetic_users=150,
        synthetic_items=60,
        synthetic_categories=4,
        hidden_size=16,
        num_heads=2,
        max_seq_length=10,
        prior="normal",
        epochs=2,
        progress=False,
    )
    assert rec.history.empty
    rec.fit(log=lambda line: None)
    # Without a folder the history is kept in memory only; the normal prior has no
    # interest terms or interest head.
    assert rec.history["epoch"].tolist() == [1, 2]
    assert "term_kl_z" in rec.history and "term_interest_nll" not in rec.history
    assert not any(c.startswith("interest_valid_") for c in rec.history.columns)


def test_resume_keeps_earlier_rows_and_adds_none_twice(trained, tmp_path):
    folder = tmp_path / "resumed"
    shutil.copytree(trained, folder)
    before = history(folder)
    # A crash after history.csv got epoch 4 but before last.pt did: epoch 4 runs again.
    crashed = pd.concat([before, before.tail(1).assign(epoch=4, loss=99.0)])
    crashed.to_csv(folder / HISTORY_FILE, index=False)
    argv = ["train", *TINY, "--no-progress", "--epochs", "5", "--out", folder, "--resume"]
    code, _, err = run_main(argv)
    assert code == 0, err
    after = history(folder)
    assert after["epoch"].tolist() == [1, 2, 3, 4, 5]
    pd.testing.assert_frame_equal(after.head(3), before)
    assert after["loss"].iloc[3] != 99.0
    assert after["step"].is_monotonic_increasing


def test_resumed_run_that_stops_at_once_drops_rows_past_its_state(trained, tmp_path):
    folder = tmp_path / "resumed"
    shutil.copytree(trained, folder)
    before = history(folder)
    pd.concat([before, before.tail(1).assign(epoch=4)]).to_csv(folder / HISTORY_FILE, index=False)
    # The state is at epoch 3 of 3: nothing runs, and the crashed epoch 4 must go.
    code, _, err = run_main(
        ["train", *TINY, "--no-progress", "--epochs", "3", "--out", folder, "--resume"]
    )
    assert code == 0, err
    pd.testing.assert_frame_equal(history(folder), before)


def test_an_epoch_run_again_replaces_its_row_and_later_ones():
    kept = TrainingHistory([{"epoch": e, "step": 10 * e, "loss": 1.0} for e in (1, 2, 3)])
    kept.add(EpochRecord(2, 25, 0.5, {"nll": 4.0}, {"ndcg@10": 0.3}, 0.01, 0.2, 1.0))
    assert [(r["epoch"], r["step"], r["loss"]) for r in kept.rows] == [(1, 10, 1.0), (2, 25, 0.5)]
    assert kept.rows[-1]["term_nll"] == 4.0 and kept.rows[-1]["valid_ndcg@10"] == 0.3


def test_curves_png_opens(trained):
    image = imread(trained / "curves.png")
    height, width = image.shape[:2]
    assert height >= 300 and width >= 600
    assert image.std() > 0.05, "a blank image"


@pytest.mark.skipif(not tensorboard_available(), reason="tensorboard is not installed")
def test_tensorboard_events_hold_the_history(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(trained / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss", "term/nll", "valid/ndcg@10", "interest_valid/ndcg@20", "beta"} <= tags
    rows = history(trained)
    logged = events.Scalars("valid/ndcg@10")
    assert [e.step for e in logged] == rows["epoch"].tolist()
    assert [e.value for e in logged] == pytest.approx(rows["valid_ndcg@10"].tolist(), rel=1e-6)


def test_no_tensorboard_flag(tmp_path):
    out = tmp_path / "run"
    argv = ["train", *TINY, "--no-progress", "--epochs", "1", "--no-tensorboard", "--out", out]
    code, _, err = run_main(argv)
    assert code == 0, err
    assert not (out / "tensorboard").exists()
    assert (out / HISTORY_FILE).is_file() and (out / "curves.png").is_file()


def subprocess_train(out: Path, *flags: str) -> subprocess.CompletedProcess:
    # Progress left on: with stderr a pipe, as under `make demo > log 2>&1`, no bar is drawn.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "sigma_pyro.cli.main", "train", *TINY, "--epochs", "2"]
        + ["--out", str(out), *flags],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )


def test_output_to_a_file_has_one_line_per_epoch_and_no_carriage_returns(tmp_path):
    proc = subprocess_train(tmp_path / "run")
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "\r" not in proc.stdout
    epochs = [line for line in proc.stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1", "2"]


def test_quiet_prints_only_the_result(tmp_path):
    proc = subprocess_train(tmp_path / "run", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert '"test"' in proc.stdout


def test_quiet_still_prints_errors(tmp_path):
    code, _, err = run_main(
        ["train", *TINY, "--quiet", "--epochs", "1", "--lr", "1e6", "--out", tmp_path / "o"]
    )
    assert code == 2
    assert err.strip().startswith("sigma-pyro: error: ") and len(err.strip().splitlines()) == 1


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("stream,drawn", [(Terminal(), True), (io.StringIO(), False)])
def test_progress_bar_only_on_a_terminal(stream, drawn, monkeypatch):
    monkeypatch.setattr(sys, "stderr", stream)
    for _ in progress_bar(range(3), desc="work"):
        pass
    assert ("\r" in stream.getvalue()) == drawn
    assert bool(stream.getvalue()) == drawn
