"""The ``sigma-pyro`` command, in-process and as a subprocess: train, evaluate, recommend,
resume, help, and one-line errors with exit status 2 for bad input."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import TINY_FLAGS, run_main
from sigma_pyro.cli.main import main

TINY = [*TINY_FLAGS, "--no-progress"]
REPO = Path(__file__).resolve().parents[1]


def run_subprocess(argv: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "sigma_pyro.cli.main", *map(str, argv)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )


def assert_user_error(code: int, stderr: str, *needles: str) -> str:
    assert code == 2, stderr
    # Progress lines may precede it; the error itself is one line, and the last.
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr
    errors = [line for line in lines if "error" in line.lower()]
    assert len(errors) == 1, f"expected a single-line error, got {stderr!r}"
    assert lines[-1] == errors[0] and errors[0].startswith("sigma-pyro: error: ")
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in {errors[0]!r}"
    return errors[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("run")
    code, stdout, stderr = run_main(["train", *TINY, "--epochs", "2", "--out", out])
    assert code == 0, stderr
    return {"out": out, "stdout": stdout, "stderr": stderr}


# -- train ------------------------------------------------------------------------------------


def test_an_annealed_assignment_temperature_is_saved_with_the_weights(tmp_path):
    code, _, stderr = run_main(
        ["train", *TINY, "--epochs", "3", "--patience", "5",
         "--assignment-temperature-start", "1.0", "--assignment-temperature", "0.1",
         "--assignment-anneal-epochs", "4", "--out", tmp_path],
    )  # fmt: skip
    assert code == 0, stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    # The best epoch's weights trained at the temperature of that epoch: 0.1 ** ((e - 1) / 4).
    expected = 0.1 ** ((metrics["best_epoch"] - 1) / 4)
    assert metrics["interests"]["assignment_temperature"] == pytest.approx(expected, rel=1e-5)


def test_train_writes_the_model_folder(trained):
    out = trained["out"]
    for name in ("model.pt", "model.json", "last.pt", "metrics.json"):
        assert (out / name).is_file(), name
    assert not list(out.glob(".*.tmp")), "atomic writes must not leave temporary files"

    metrics = json.loads((out / "metrics.json").read_text())
    for split in ("valid", "test"):
        for key in ("recall@20", "ndcg@20", "recall@10", "ndcg@10", "mrr"):
            assert 0.0 <= metrics[split][key] <= 1.0, (split, key)
        assert metrics[split]["ndcg@20"] <= metrics[split]["recall@20"] + 1e-9
    assert metrics["epochs_run"] == 2
    assert metrics["best_epoch"] in (1, 2)
    assert metrics["peak_rss_mb"] > 50  # the process's own peak, torch included
    assert "popularity" in metrics["baselines"]
    interests = metrics["interests"]  # the default prior is sigma, K = 8 in the preset
    assert interests["chance_nll"] == pytest.approx(math.log(60))
    assert interests["nll_per_sequence"] > 0
    assert 0 < interests["main_nll_per_sequence"] < 2 * math.log(60)
    assert set(interests["valid"]) == {"ndcg@20", "recall@20"}
    assert 1 / 8 <= interests["median_max_assignment"] <= 1
    assert 0 <= interests["items_per_prototype_min_share"] <= 1 / 8
    assert 0 <= interests["intensity_entropy_mean"] <= math.log(8) + 1e-6
    assert "interest-head ndcg@20=" in trained["stderr"]

    meta = json.loads((out / "model.json").read_text())
    assert meta["config"]["model"]["hidden_size"] == 16
    assert meta["config"]["data"]["synthetic_users"] == 150
    assert len(meta["items"]) == 60 and len(set(meta["items"])) == 60

    state = torch.load(out / "last.pt", weights_only=True)
    assert state["epoch"] == 2

    printed = json.loads(trained["stdout"])
    assert printed["out"] == str(out)
    assert printed["test"] == pytest.approx(metrics["test"])
    assert "150 users, 60 items" in trained["stderr"]


def test_evaluate_reproduces_the_training_metrics(trained, capsys):
    assert main(["evaluate", "--model", str(trained["out"])]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"valid", "test", "interests"}
    metrics = json.loads((trained["out"] / "metrics.json").read_text())
    # model.pt holds the best epoch's weights, the ones train evaluated.
    for split in ("valid", "test"):
        assert report[split] == pytest.approx(metrics[split], abs=1e-6), split
    interests = dict(metrics["interests"])
    assert report["interests"].pop("valid") == pytest.approx(interests.pop("valid"), abs=1e-6)
    assert report["interests"] == pytest.approx(interests, abs=1e-6)


def test_evaluate_one_split(trained, capsys):
    assert (
        main(["evaluate", "--model", str(trained["out"]), "--split", "test", "--ks", "3,10"]) == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"test", "interests"}
    assert {"recall@3", "ndcg@3", "recall@10", "mrr"} <= set(report["test"])
    assert "recall@20" not in report["test"]


def test_evaluate_with_other_cutoffs(trained, capsys):
    code = main(["evaluate", "--model", str(trained["out"]), "--split", "test", "--ks", "1,3"])
    assert code == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    assert {"recall@1", "recall@3"} <= set(report["test"])


def vocabulary(trained) -> list[str]:
    return json.loads((trained["out"] / "model.json").read_text())["items"]


def test_recommend_for_a_history(trained, capsys):
    items = vocabulary(trained)
    history = items[:3]
    key = " ".join(history)
    assert main(["recommend", "--model", str(trained["out"]), "--history", key, "-k", "5"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert list(result) == [key]
    recommended = [entry["item"] for entry in result[key]]
    assert len(recommended) == 5 and len(set(recommended)) == 5
    assert not set(recommended) & set(history), "items in the history must not be recommended"
    assert set(recommended) <= set(items)
    scores = [entry["score"] for entry in result[key]]
    assert scores == sorted(scores, reverse=True)


def test_recommend_ignores_unknown_items_in_a_history(trained, capsys):
    items = vocabulary(trained)
    key = f"{items[0]} not-an-item {items[1]}"
    assert main(["recommend", "--model", str(trained["out"]), "--history", key, "-k", "4"]) == 0
    recommended = [e["item"] for e in json.loads(capsys.readouterr().out)[key]]
    assert len(recommended) == 4 and not {items[0], items[1], "not-an-item"} & set(recommended)


def test_recommend_for_a_user(trained, capsys):
    from sigma_pyro.api import SigmaRecommender

    assert (
        main(
            ["recommend", "--model", str(trained["out"]), "--user", "u0", "--user", "u1", "-k", "5"]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert list(result) == ["u0", "u1"]
    rec = SigmaRecommender.load(trained["out"])
    dataset = rec.load_data()
    for user in ("u0", "u1"):
        history = set(dataset.items.decode(dataset.sequences[dataset.user_position(user)]))
        recommended = [e["item"] for e in result[user]]
        assert len(recommended) == 5 and len(set(recommended)) == 5
        assert not set(recommended) & history


def test_recommend_as_a_subprocess(trained):
    items = vocabulary(trained)
    key = " ".join(items[3:6])
    proc = run_subprocess(["recommend", "--model", trained["out"], "--history", key, "-k", "5"])
    assert proc.returncode == 0, proc.stderr
    recommended = [e["item"] for e in json.loads(proc.stdout)[key]]
    assert len(recommended) == 5 and not set(recommended) & set(items[3:6])


def test_resume_continues_from_last_state(trained, tmp_path):
    out = tmp_path / "resumed"
    shutil.copytree(trained["out"], out)
    code, stdout, stderr = run_main(["train", *TINY, "--epochs", "3", "--out", out, "--resume"])
    assert code == 0, stderr
    assert "resumed" in stderr
    assert "at epoch 2" in stderr
    # Only the third epoch ran: one epoch line in the log.
    epoch_lines = [line for line in stderr.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 1 and epoch_lines[0].split()[1] == "3"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 3
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 3
    assert json.loads(stdout)["test"] == pytest.approx(metrics["test"])


# -- help -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command,flag",
    [
        ("train", "--num-interests"),
        ("evaluate", "--split"),
        ("recommend", "--history"),
        (None, "train"),
    ],
)
def test_help(command, flag, capsys):
    argv = [command, "--help"] if command else ["--help"]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: sigma-pyro")
    assert flag in text


# -- user errors --------------------------------------------------------------------------------


def test_missing_data_file(tmp_path, capsys):
    path = tmp_path / "absent.txt"
    code = main(
        ["train", *TINY, "--epochs", "1", "--data", str(path), "--out", str(tmp_path / "o")]
    )
    assert_user_error(code, capsys.readouterr().err, str(path))


def test_missing_data_file_as_a_subprocess(tmp_path):
    path = tmp_path / "absent.txt"
    proc = run_subprocess(
        ["train", *TINY, "--epochs", "1", "--data", path, "--out", tmp_path / "o"]
    )
    assert_user_error(proc.returncode, proc.stderr, str(path))


def test_malformed_data_file(tmp_path, capsys):
    path = tmp_path / "bad.txt"
    path.write_text("u1 a b c d\nu2\nu3 a b c\n")
    code = main(
        ["train", *TINY, "--epochs", "1", "--data", str(path), "--out", str(tmp_path / "o")]
    )
    assert_user_error(code, capsys.readouterr().err, f"{path}:2")
    assert not (tmp_path / "o" / "model.pt").exists()


@pytest.mark.parametrize(
    "flags,needle",
    [
        (["--num-interests", "0"], "--num-interests"),
        (["--prior", "nope"], "--prior"),
        (["--max-seq-length", "1"], "--max-seq-length"),
        (["--preset", "nope"], "--preset"),
    ],
)
def test_impossible_settings(flags, needle, tmp_path, capsys):
    code = main(["train", *TINY, "--epochs", "1", *flags, "--out", str(tmp_path / "o")])
    assert_user_error(code, capsys.readouterr().err, needle)


@pytest.mark.parametrize("command", ["evaluate", "recommend"])
def test_model_folder_without_a_model(command, tmp_path, capsys):
    extra = ["--history", "a b"] if command == "recommend" else []
    code = main([command, "--model", str(tmp_path), *extra])
    assert_user_error(code, capsys.readouterr().err, "model.json")


def test_model_folder_with_a_corrupt_checkpoint(trained, tmp_path, capsys):
    folder = tmp_path / "corrupt"
    shutil.copytree(trained["out"], folder)
    (folder / "model.pt").write_bytes(b"not a checkpoint")
    code = main(["evaluate", "--model", str(folder)])
    assert_user_error(code, capsys.readouterr().err, "model.pt")


OLDER_SETTINGS = {
    "assignment_anneal_epochs": [
        "--learn-assignment-temperature",
        "--assignment-anneal-epochs",
        "0",
    ],
    "position_encoding": ["--position-encoding", "absolute"],
}


@pytest.mark.parametrize("setting,flags", OLDER_SETTINGS.items())
def test_a_model_saved_before_a_setting_existed_loads_as_trained(tmp_path, setting, flags):
    learned = tmp_path / "learned"
    code, _, stderr = run_main(["train", *TINY, "--epochs", "1", *flags, "--out", learned])
    assert code == 0, stderr
    older = tmp_path / "older"
    shutil.copytree(learned, older)
    meta = json.loads((older / "model.json").read_text())
    del meta["config"]["model"][setting]
    (older / "model.json").write_text(json.dumps(meta))
    scores = []
    for folder in (learned, older):
        code, stdout, stderr = run_main(["evaluate", "--model", folder, "--split", "valid"])
        assert code == 0, stderr
        scores.append(json.loads(stdout))
    assert scores[0] == scores[1]


def test_history_of_unknown_items(trained, capsys):
    code = main(["recommend", "--model", str(trained["out"]), "--history", "nope1 nope2"])
    assert_user_error(code, capsys.readouterr().err, "known")


def test_unknown_user(trained, capsys):
    code = main(["recommend", "--model", str(trained["out"]), "--user", "nobody"])
    assert_user_error(code, capsys.readouterr().err, "'nobody'")


def test_recommend_needs_a_user_or_history(trained, capsys):
    code = main(["recommend", "--model", str(trained["out"])])
    assert_user_error(code, capsys.readouterr().err, "--user", "--history")


def test_unknown_flag_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--no-such-flag", "1"])
    assert info.value.code == 2
    assert "--no-such-flag" in capsys.readouterr().err


def test_fewer_than_four_synthetic_categories(tmp_path, capsys):
    argv = ["train", *TINY, "--epochs", "1", "--out", str(tmp_path / "o")]
    argv[argv.index("--synthetic-categories") + 1] = "3"
    code = main(argv)
    assert code == 0, capsys.readouterr().err


def test_diverging_training_is_a_one_line_error(tmp_path, capsys):
    argv = ["train", *TINY, "--epochs", "2", "--lr", "1e6", "--out", str(tmp_path / "o")]
    try:
        code = main(argv)
    except ValueError as err:  # what happens today
        pytest.fail(f"uncaught {type(err).__name__}: {str(err).splitlines()[0]}")
    assert_user_error(code, capsys.readouterr().err, "non-finite")


def test_help_and_the_package_import_do_not_load_torch():
    # `sigma-pyro --help` answers in a fraction of a second only while torch stays unloaded.
    code = (
        "import sys, sigma_pyro\n"
        "from sigma_pyro.cli.main import build_parser\n"
        "build_parser().format_help()\n"
        "print(sorted(m for m in ('torch', 'pyro', 'pandas') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
