"""Failure behaviour (README.md, "Failure behaviour"): bad input, interrupted training, damaged or
untrusted checkpoints, numerical faults, data a model has never seen, and memory limits."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import TINY_FLAGS
from sigma_pyro.api import SigmaRecommender
from sigma_pyro.cli.main import main
from sigma_pyro.config import load_config
from sigma_pyro.errors import CheckpointError, ConfigError
from sigma_pyro.nn.module import SigmaModule
from sigma_pyro.runtime.checkpoint import FORMAT_VERSION, atomic_torch_save, safe_torch_load
from sigma_pyro.runtime.resources import MEMORY_LIMIT_ENV, estimate_training_memory

TINY = [*TINY_FLAGS, "--no-progress"]
REPO = Path(__file__).resolve().parents[1]


def cli(argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_user_error(code: int, stderr: str, *needles: str) -> str:
    """Exit status 2 and one 'sigma-pyro: error: ...' line, the last, holding every needle."""
    assert code == 2, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("sigma-pyro: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in {errors[0]!r}"
    return errors[0]


def train(capsys, data: Path | None = None, out: Path | None = None, epochs: int = 1):
    extra = (["--data", data] if data is not None else []) + (["--out", out] if out else [])
    return cli(["train", *TINY, "--epochs", epochs, *extra], capsys)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model")
    assert main(["train", *TINY, "--epochs", "2", "--out", str(out)]) == 0
    return out


def copy_model(trained: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(trained, folder)
    return folder


# -- 1. bad input: one line naming the file and the place, exit status 2 -----------------------

INTER_HEADER = "user_id:token\titem_id:token\ttimestamp:float\n"
CSV_HEADER = "user_id,item_id,timestamp\n"
GOOD_ROWS = "u,a,1\nu,b,2\nu,c,3\n"


def parquet(columns: dict, names: list[str] | None = None):
    def write(path: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table(list(map(pa.array, columns.values())), names=names or list(columns))
        pq.write_table(table, path)

    return write


BAD_FILES = {
    "seq empty": ("d.txt", b"", ["d.txt", "empty"]),
    "seq binary": ("d.txt", b"a 1 2 3\nb 4\x00 5 6\n", ["d.txt:2:", "binary"]),
    "seq not UTF-8": ("d.txt", b"a 1 2 3\nb 4 \xe9 6\n", ["d.txt:2:", "UTF-8"]),
    "seq user without items": ("d.txt", b"a 1 2 3\nb\n", ["d.txt:2:", "1 field"]),
    "inter empty": ("d.inter", b"", ["d.inter", "empty"]),
    "inter binary": ("d.inter", b"\x89PNG\r\n\x1a\n\x00\x00", ["d.inter:3:", "binary"]),
    "inter misnamed field": (
        "d.inter",
        b"uid:token\titem_id:token\nu\ta\n",
        ["d.inter:1:", "user_id", "uid"],
    ),
    "inter duplicated field": (
        "d.inter",
        b"user_id:token\titem_id:token\tuser_id:token\n",
        ["d.inter:1:", "'user_id'", "twice"],
    ),
    "inter bad timestamp": (
        "d.inter",
        (INTER_HEADER + "u\ta\t1\nu\tb\tnoon\n").encode(),
        ["d.inter:3:", "timestamp", "'noon'"],
    ),
    "inter missing field": (
        "d.inter",
        (INTER_HEADER + "u\ta\n").encode(),
        ["d.inter:2:", "expected 3", "got 2"],
    ),
    "csv empty": ("d.csv", b"", ["d.csv", "empty"]),
    "csv not UTF-8": (
        "d.csv",
        (CSV_HEADER + "u,a,1\nu,b\xff,2\n").encode("latin-1"),
        ["d.csv:3:", "UTF-8"],
    ),
    "csv misnamed column": (
        "d.csv",
        ("userid,item_id,timestamp\n" + GOOD_ROWS).encode(),
        ["d.csv", "'user_id'", "'userid'"],
    ),
    "csv missing column": ("d.csv", b"user_id,item_id\nu,a\n", ["d.csv", "'timestamp'"]),
    "csv duplicated header": (
        "d.csv",
        b"user_id,item_id,user_id\nu,a,v\n",
        ["d.csv:1:", "'user_id'", "more than once"],
    ),
    "csv bad timestamp": (
        "d.csv",
        (CSV_HEADER + "u,a,1\nu,b,2\nu,c,later\n").encode(),
        ["d.csv:4:", "'timestamp'", "'later'"],
    ),
    # pandas would make the extra first field an index and shift every column by one.
    "csv extra field": (
        "d.csv",
        (CSV_HEADER + "u,a,1,x\nu,b,2,x\nu,c,3,x\n").encode(),
        ["d.csv:2:", "expected 3 fields", "got 4"],
    ),
    "tsv empty id": ("d.tsv", b"user_id\titem_id\ttimestamp\nu\t\t1\n", ["d.tsv:2:", "'item_id'"]),
    "parquet empty": ("d.parquet", b"", ["d.parquet", "Parquet"]),
    "parquet garbage": ("d.parquet", b"PAR1 this is not parquet", ["d.parquet", "Parquet"]),
    "parquet misnamed column": (
        "d.parquet",
        parquet({"user": ["u"], "item_id": ["a"], "timestamp": [1]}),
        ["d.parquet", "'user_id'", "'user'"],
    ),
    "parquet bad timestamp": (
        "d.parquet",
        parquet({"user_id": ["u"] * 3, "item_id": list("abc"), "timestamp": ["1", "x", "3"]}),
        ["d.parquet", "row 2", "'timestamp'", "'x'"],
    ),
    "parquet duplicated column": (
        "d.parquet",
        parquet(
            {"a": ["u"], "b": ["a"], "c": [1], "d": ["v"]},
            names=["user_id", "item_id", "timestamp", "user_id"],
        ),
        ["d.parquet", "'user_id'", "more than once"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_data_files_are_one_line_errors(case, tmp_path, capsys):
    pytest.importorskip("pyarrow")
    name, content, needles = BAD_FILES[case]
    path = tmp_path / name
    if callable(content):
        content(path)
    else:
        path.write_bytes(content)
    code, _, err = train(capsys, data=path, out=tmp_path / "out")
    assert_user_error(code, err, *needles)
    assert not (tmp_path / "out").exists()


BAD_PRESETS = {
    "not YAML": (b"model:\n  hidden_size: [\n", ["p.yaml:3:", "YAML"]),
    "not UTF-8": (b"model:\n  prior: \xff\n", ["p.yaml:2:", "UTF-8"]),
    "binary": (b"train:\n  lr: 1\x00\n", ["p.yaml", "YAML"]),
    "unknown key": (b"model:\n  hiden_size: 3\n", ["p.yaml", "model.hiden_size"]),
    "not a mapping": (b"- 1\n- 2\n", ["p.yaml", "mapping"]),
    "wrong type": (b"train:\n  lr: fast\n", ["p.yaml", "train.lr", "'fast'"]),
    "out of range": (b"model:\n  num_interests: -3\n", ["p.yaml", "--num-interests", "-3"]),
}


@pytest.mark.parametrize("case", list(BAD_PRESETS))
def test_bad_presets_are_one_line_errors(case, tmp_path, capsys):
    content, needles = BAD_PRESETS[case]
    preset = tmp_path / "p.yaml"
    preset.write_bytes(content)
    code, _, err = cli(["train", *TINY, "--preset", preset, "--out", tmp_path / "o"], capsys)
    assert_user_error(code, err, *needles)


@pytest.mark.parametrize(
    "flags,needles",
    [
        (["--hidden-dropout", "1.5"], ["--hidden-dropout", "1.5"]),
        (["--lr", "nan"], ["--lr", "nan"]),
        (["--batch-size", "many"], ["--batch-size", "'many'"]),
        (["--num-heads", "3"], ["--hidden-size", "--num-heads"]),
        (["--kcore", "-1"], ["--kcore"]),
        (["--early-stop-metric", "auc"], ["--early-stop-metric", "'auc'"]),
    ],
)
def test_settings_out_of_range(flags, needles, tmp_path, capsys):
    code, _, err = cli(["train", *TINY, *flags, "--out", tmp_path / "o"], capsys)
    assert_user_error(code, err, *needles)


def test_short_users_are_skipped_and_counted(tmp_path, capsys):
    path = tmp_path / "d.txt"
    path.write_text("a 1 2 3 4\nb 1 2\nc 5\nd 4 5 6 1\ne 2 3 4 5\n")
    code, _, err = train(capsys, data=path, out=tmp_path / "o")
    assert code == 0, err
    assert "3 users, 6 items" in err and "(2 users with < 3 items skipped)" in err


# -- 3. interrupted and resumed training ----------------------------------------------------

RESUMABLE = [
    "--synthetic-users",
    "200",
    "--synthetic-items",
    "60",
    "--synthetic-categories",
    "4",
    "--hidden-size",
    "16",
    "--num-heads",
    "2",
    "--max-seq-length",
    "10",
    "--batch-size",
    "32",
    "--no-progress",
    "--epochs",
    "4",
    "--seed",
    "3",
]


def start_training(out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sigma_pyro.cli.main",
            "train",
            *RESUMABLE,
            "--out",
            str(out),
            *extra,
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def saved_epoch(out: Path) -> int:
    try:
        return safe_torch_load(out / "last.pt")["epoch"]
    except CheckpointError:  # not written yet
        return 0


@pytest.fixture
def processes():
    """Training subprocesses, killed if a test ends before they do."""
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_killed_training_resumes_to_the_same_result(tmp_path, processes):
    # The uninterrupted reference run goes alongside, to save time.
    reference = start_training(tmp_path / "reference")
    killed = start_training(tmp_path / "killed")
    processes += [reference, killed]
    deadline = time.monotonic() + 120
    while saved_epoch(tmp_path / "killed") < 2:
        assert killed.poll() is None, killed.communicate()[1]
        assert time.monotonic() < deadline, "training never reached epoch 2"
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "metrics.json").exists(), "killed after it finished"

    resumed = start_training(tmp_path / "killed", "--resume")
    processes.append(resumed)
    _, resumed_log = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, resumed_log
    assert "resumed from" in resumed_log
    _, reference_log = reference.communicate(timeout=180)
    assert reference.returncode == 0, reference_log

    got = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    want = json.loads((tmp_path / "reference" / "metrics.json").read_text())
    for split in ("valid", "test"):
        assert got[split] == pytest.approx(want[split], abs=1e-6), split
    assert (got["best_epoch"], got["epochs_run"]) == (want["best_epoch"], want["epochs_run"])
    weights = safe_torch_load(tmp_path / "killed" / "model.pt")
    for name, tensor in safe_torch_load(tmp_path / "reference" / "model.pt").items():
        torch.testing.assert_close(weights[name], tensor, rtol=0, atol=1e-6, msg=name)

    # What a checkpoint carries, besides the weights.
    meta = json.loads((tmp_path / "killed" / "model.json").read_text())
    state = safe_torch_load(tmp_path / "killed" / "last.pt")
    for saved in (meta, state):
        assert saved["format_version"] == FORMAT_VERSION
        assert {"sigma_pyro", "torch", "pyro"} <= set(saved["versions"])
        assert saved["config"]["model"]["hidden_size"] == 16
    assert len(meta["items"]) == 60
    assert {"module", "optimizer", "rng", "epoch", "step", "best_epoch"} <= set(state)


def test_resume_refuses_other_model_settings(trained, tmp_path, capsys):
    folder = copy_model(trained, tmp_path)
    argv = ["train", *TINY, "--epochs", "3", "--out", folder, "--resume"]
    argv[argv.index("--hidden-size") + 1] = "32"
    code, _, err = cli(argv, capsys)
    assert_user_error(code, err, "last.pt", "--hidden-size")


def test_resume_refuses_other_data(trained, tmp_path, capsys):
    folder = copy_model(trained, tmp_path)
    argv = ["train", *TINY, "--epochs", "3", "--out", folder, "--resume"]
    argv[argv.index("--synthetic-items") + 1] = "70"
    code, _, err = cli(argv, capsys)
    assert_user_error(code, err, "model.json", "other items")


# -- 4. damaged checkpoints, and writes that fail ----------------------------------------------


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {
    "model.pt truncated": ("model.pt", truncate),
    "model.pt garbage": ("model.pt", lambda p: p.write_bytes(os.urandom(256))),
    "model.pt empty": ("model.pt", lambda p: p.write_bytes(b"")),
    "model.pt other tensors": ("model.pt", lambda p: torch.save({"w": torch.zeros(2)}, p)),
    "model.json truncated": ("model.json", truncate),
    "model.json not an object": ("model.json", lambda p: p.write_text("[1, 2]")),
    "model.json not UTF-8": ("model.json", lambda p: p.write_bytes(b'{"a": "\xff"}')),
    "model.json wrong version": (
        "model.json",
        lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "format_version": 99})),
    ),
    "model.json no items": (
        "model.json",
        lambda p: p.write_text(
            json.dumps({k: v for k, v in json.loads(p.read_text()).items() if k != "items"})
        ),
    ),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_model_is_a_one_line_error(case, trained, tmp_path, capsys):
    name, damage = DAMAGE[case]
    folder = copy_model(trained, tmp_path)
    damage(folder / name)
    code, _, err = cli(["evaluate", "--model", folder], capsys)
    assert_user_error(code, err, str(folder / name))
    with pytest.raises(CheckpointError):
        SigmaRecommender.load(folder)


@pytest.mark.parametrize(
    "damage",
    [truncate, lambda p: p.write_bytes(b"\x00" * 64), lambda p: torch.save({"epoch": 1}, p)],
)
def test_damaged_training_state_is_a_one_line_error(damage, trained, tmp_path, capsys):
    folder = copy_model(trained, tmp_path)
    damage(folder / "last.pt")
    code, _, err = cli(["train", *TINY, "--epochs", "3", "--out", folder, "--resume"], capsys)
    assert_user_error(code, err, str(folder / "last.pt"))


def snapshot(folder: Path) -> dict[str, bytes]:
    # Recursive: a run folder holds tensorboard/ when the package is installed.
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_failed_write_keeps_the_previous_checkpoint(failing, trained, tmp_path, monkeypatch):
    folder = copy_model(trained, tmp_path)
    before = snapshot(folder)
    rec = SigmaRecommender.load(folder)
    rec.module.item_bias.data += 1.0  # a different model, so an overwrite would show

    def fail(*args):
        raise OSError(28, "No space left on device")

    # fsync fails after the bytes went to the temporary file, replace after it is complete.
    monkeypatch.setattr(f"sigma_pyro.runtime.checkpoint.os.{failing}", fail)
    with pytest.raises(CheckpointError, match="No space left on device"):
        rec.save(folder)
    with pytest.raises(CheckpointError):
        atomic_torch_save({"epoch": 99}, folder / "last.pt")
    monkeypatch.undo()
    assert snapshot(folder) == before, "the old files are intact and no temporary file is left"
    torch.testing.assert_close(
        SigmaRecommender.load(folder).module.state_dict(), safe_torch_load(trained / "model.pt")
    )


# -- 5. numerical faults ----------------------------------------------------------------------


def poison_after(monkeypatch, calls: int, poison) -> None:
    """Make the next-item likelihood see ``poison(representation)`` from the given training
    call on; evaluation (in eval mode) is left alone."""
    original = SigmaModule.next_item_distribution
    seen = {"training calls": 0}

    def next_item_distribution(self, representation):
        if self.training:
            seen["training calls"] += 1
            if seen["training calls"] >= calls:
                representation = poison(representation)
        return original(self, representation)

    monkeypatch.setattr(SigmaModule, "next_item_distribution", next_item_distribution)


class NanGradient(torch.autograd.Function):
    """The identity forward, NaN backward: a finite loss with a non-finite gradient."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, float("nan"))


@pytest.mark.parametrize(
    "poison,needles",
    [
        (lambda representation: representation * float("nan"), ["non-finite ELBO", "'next_item'"]),
        (NanGradient.apply, ["non-finite gradient", "item_embedding.weight"]),
    ],
)
def test_numerical_fault_stops_training_and_keeps_the_last_good_model(
    poison, needles, tmp_path, monkeypatch, capsys
):
    poison_after(monkeypatch, calls=5, poison=poison)  # three steps per epoch: epoch 2
    out = tmp_path / "o"
    code, _, err = train(capsys, out=out, epochs=4)
    state = safe_torch_load(out / "last.pt")
    assert state["epoch"] == 1
    # The fifth step is the second of epoch 2, whatever the batches per epoch.
    assert_user_error(
        code, err, *needles, "epoch 2,", f"step {state['step'] + 2}", "last good checkpoint"
    )
    monkeypatch.undo()
    best = SigmaRecommender.load(out).module.state_dict()
    assert all(torch.isfinite(t).all() for t in best.values())
    torch.testing.assert_close(best, state["module"])


# -- 6. untrusted files ------------------------------------------------------------------------


class Payload:
    """Unpickling this runs a shell command: what a hostile checkpoint would carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


@pytest.mark.parametrize("name", ["model.pt", "last.pt"])
def test_pickled_code_in_a_checkpoint_is_refused(name, trained, tmp_path, capsys):
    folder = copy_model(trained, tmp_path)
    marker = tmp_path / "pwned"
    state = safe_torch_load(folder / name)
    state["module" if name == "last.pt" else "item_bias"] = Payload(marker)
    torch.save(state, folder / name)

    if name == "model.pt":
        code, _, err = cli(["evaluate", "--model", folder], capsys)
        with pytest.raises(CheckpointError, match="refusing"):
            SigmaRecommender.load(folder)
    else:
        code, _, err = cli(["train", *TINY, "--epochs", "3", "--out", folder, "--resume"], capsys)
    assert_user_error(code, err, str(folder / name), "refusing")
    assert not marker.exists()

    # The payload is live: plain unpickling would have run it.
    torch.load(folder / name, weights_only=False)
    assert marker.exists()


# -- 7. a model used on data with items it has never seen -------------------------------------


@pytest.fixture
def other_data(trained, tmp_path) -> Path:
    items = json.loads((trained / "model.json").read_text())["items"]
    path = tmp_path / "other.txt"
    path.write_text(
        "\n".join(
            [
                "full " + " ".join(items[:5]),  # all known
                "mixed new1 " + " ".join(items[5:9]) + " new2",  # 2 unknown, 4 known
                f"short {items[1]} zz {items[2]}",  # 2 known: too short
                "alien x y z",  # none known
                f"late {items[3]} {items[4]} q {items[7]}",  # 1 unknown, 3 known
            ]
        )
        + "\n"
    )
    return path


def test_evaluate_on_data_with_unknown_items(trained, other_data, capsys):
    code, out, err = cli(["evaluate", "--model", trained, "--data", other_data], capsys)
    assert code == 0, err
    assert "4 histories had 7 items unknown to the model" in err
    assert "1 users dropped entirely" in err
    assert "1 users have fewer than 3 items known to the model" in err
    report = json.loads(out)
    assert report["valid"]["num_users"] == report["test"]["num_users"] == 3


def test_recommend_on_data_with_unknown_items(trained, other_data, capsys):
    code, out, err = cli(
        [
            "recommend",
            "--model",
            trained,
            "--data",
            other_data,
            "--user",
            "short",
            "--user",
            "mixed",
            "-k",
            "3",
        ],
        capsys,
    )
    assert code == 0, err
    assert "4 histories had 7 items unknown to the model" in err
    result = json.loads(out)
    assert all(len(result[user]) == 3 for user in ("short", "mixed"))
    code, _, err = cli(
        ["recommend", "--model", trained, "--data", other_data, "--user", "alien"], capsys
    )
    assert_user_error(code, err, "'alien'")


def test_data_without_a_single_known_item(trained, tmp_path, capsys):
    path = tmp_path / "alien.txt"
    path.write_text("a x y z\nb y z w\n")
    code, _, err = cli(["evaluate", "--model", trained, "--data", path], capsys)
    assert_user_error(code, err, str(path), "known to the model")


# -- 8. resource limits ------------------------------------------------------------------------


def test_training_that_cannot_fit_is_refused(tmp_path, monkeypatch, capsys):
    rec = SigmaRecommender.from_preset(
        "synthetic",
        synthetic_users=150,
        synthetic_items=60,
        synthetic_categories=4,
        hidden_size=16,
        num_heads=2,
        max_seq_length=10,
        batch_size=64,
    )
    lengths = [len(s) - 1 for s in rec.split.train]

    def needs(batch_size: int) -> int:
        rec.config.train.batch_size = batch_size
        return estimate_training_memory(rec.config, 60, lengths).total

    limit = needs(64) // 2
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(limit / 2**20))
    code, _, err = train(capsys, out=tmp_path / "o")
    line = assert_user_error(code, err, "training needs about", MEMORY_LIMIT_ENV, "--batch-size")
    assert not (tmp_path / "o").exists()
    suggested = int(line.split("--batch-size ")[1].split()[0])
    assert needs(suggested) <= limit < needs(2 * suggested), "the largest halving that fits"


def test_memory_limit_must_be_a_number(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "lots")
    code, _, err = train(capsys, out=tmp_path / "o")
    assert_user_error(code, err, MEMORY_LIMIT_ENV, "'lots'")


def test_memory_estimate_grows_with_the_work():
    config = load_config("beauty")
    lengths = [50] * 22_000
    capped = estimate_training_memory(config, 12_000, lengths).total
    config.train.max_batch_tokens = 0
    small = estimate_training_memory(config, 12_000, lengths).total
    # The preset's token cap (4,096 real positions) bounds the batch of longest sequences.
    assert capped < small / 2
    assert estimate_training_memory(config, 120_000, lengths).total > 4 * small
    assert estimate_training_memory(config, 12_000, [5] * 22_000).total < small / 5
    config.train.batch_size *= 4
    assert estimate_training_memory(config, 12_000, lengths).total > 2 * small
    # Two copies of 256 x 50 scores over 12k items, in float32, are 1.1 GiB; the networks'
    # activations about as much again.
    assert 1.5 * 2**30 < small < 4 * 2**30
    big_catalog = estimate_training_memory(config, 120_000, lengths).total
    config.model.likelihood = "sampled"  # 1,000 negatives instead of 120k items
    assert estimate_training_memory(config, 120_000, lengths).total < big_catalog / 4


def test_fit_checks_memory_from_the_api(monkeypatch):
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "0.01")
    rec = SigmaRecommender.from_preset(
        "synthetic",
        synthetic_users=150,
        synthetic_items=60,
        hidden_size=16,
        num_heads=2,
        epochs=1,
        progress=False,
    )
    with pytest.raises(ConfigError, match="training needs about"):
        rec.fit()


@pytest.mark.parametrize(
    "device, needle", [("tpu9", "not a device"), ("cuda:64", "--device cuda:64")]
)
def test_unusable_device_is_one_line_error(device, needle, tmp_path, capsys):
    if device.startswith("cuda") and torch.cuda.device_count() > 64:
        pytest.skip("this machine has that GPU")
    code = main(["train", "--device", device, "--epochs", "1", "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "m").exists()


def test_model_trained_on_a_gpu_loads_on_a_machine_without_one(tmp_path):
    model = tmp_path / "m"
    assert (
        main(
            [
                "train",
                "--synthetic-users",
                "60",
                "--synthetic-items",
                "60",
                "--hidden-size",
                "16",
                "--num-heads",
                "2",
                "--epochs",
                "1",
                "--no-progress",
                "--out",
                str(model),
            ]
        )
        == 0
    )
    meta = json.loads((model / "model.json").read_text())
    meta["config"]["train"]["device"] = "cuda:64"
    (model / "model.json").write_text(json.dumps(meta))
    rec = SigmaRecommender.load(model)
    assert rec.config.train.device == "cpu"
