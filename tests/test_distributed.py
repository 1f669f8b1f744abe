"""Data-parallel training under torchrun: 2 CPU processes on gloo against 1 process.

Each test launches real torchrun jobs of ``sigma-pyro train`` on a small synthetic set, so
the ranks, the process group, DDP and the files on disk are the ones a user gets.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch.distributed as dist

from helpers import make_batch
from sigma_pyro.api import SigmaRecommender
from sigma_pyro.runtime.checkpoint import STATE_FILE, safe_torch_load

pytestmark = pytest.mark.skipif(not dist.is_gloo_available(), reason="torch built without gloo")

# Small enough that a launch is mostly start-up; dropout off so that with the
# deterministic prior the only randomness is the (seeded, shared) batch order.
SMALL = [
    "--synthetic-users", "300", "--synthetic-items", "150", "--hidden-size", "16",
    "--batch-size", "48", "--hidden-dropout", "0", "--no-progress",
]  # fmt: skip
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def torchrun(nproc: int, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={nproc}", "-m", "sigma_pyro", "train", *SMALL, *args,
    ]  # fmt: skip


def one_process(*args: str) -> list[str]:
    return [sys.executable, "-m", "sigma_pyro", "train", *SMALL, *args]


def run(command: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=ENV)


def history(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "history.csv")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same 3 epochs of the deterministic prior in 2 ranks and in 1 process."""
    root = tmp_path_factory.mktemp("distributed")
    common = ["--prior", "deterministic", "--epochs", "3", "--patience", "0"]
    two = run(torchrun(2, *common, "--out", str(root / "two")))
    assert two.returncode == 0, two.stderr[-3000:]
    one = run(one_process(*common, "--out", str(root / "one")))
    assert one.returncode == 0, one.stderr[-3000:]
    return root, two


def test_two_ranks_follow_the_one_process_loss_trajectory(runs):
    # Same global batches, gradients summed over ranks: only float summation order differs.
    root, _ = runs
    two, one = history(root / "two"), history(root / "one")
    assert list(two["step"]) == list(one["step"])
    for column in ("loss", "term_loss", "valid_ndcg@10"):
        assert two[column].to_numpy() == pytest.approx(one[column].to_numpy(), rel=1e-5), column


def test_sharded_evaluation_equals_one_process_evaluation(runs):
    # metrics.json of the 2-rank run was evaluated sharded; the same weights in one process
    # must give exactly the same numbers.
    root, _ = runs
    metrics = json.loads((root / "two" / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    rec = SigmaRecommender.load(root / "two")
    rec.load_data()
    assert rec.evaluate("valid") == metrics["valid"]
    assert rec.evaluate("test") == metrics["test"]


def test_only_rank_zero_speaks_and_writes(runs):
    root, two = runs
    assert two.stderr.count("epoch   3 ") == 1
    assert "on 2 rank(s)" in two.stderr
    leftovers = [p.name for p in (root / "two").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    assert safe_torch_load(root / "two" / STATE_FILE)["world_size"] == 2


def test_a_two_rank_checkpoint_resumes_in_one_process(runs, tmp_path):
    root, _ = runs
    out = tmp_path / "resumed"
    shutil.copytree(root / "two", out)
    result = run(
        one_process("--prior", "deterministic", "--epochs", "4", "--resume", "--out", str(out))
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "written by 2 processes" in result.stderr
    assert list(history(out)["epoch"]) == [1, 2, 3, 4]


def test_one_rank_under_torchrun_goes_through_ddp_and_resumes_a_two_rank_run(runs, tmp_path):
    root, _ = runs
    out = tmp_path / "resumed"
    shutil.copytree(root / "two", out)
    result = run(
        torchrun(1, "--prior", "deterministic", "--epochs", "4", "--resume", "--out", str(out))
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "on 1 rank(s)" in result.stderr and "written by 2 processes" in result.stderr
    assert json.loads((out / "metrics.json").read_text())["world_size"] == 1
    assert list(history(out)["epoch"]) == [1, 2, 3, 4]


def test_resume_with_another_world_size_is_a_clear_error(runs, tmp_path):
    root, _ = runs
    out = tmp_path / "resumed"
    shutil.copytree(root / "two", out)
    before = (out / STATE_FILE).read_bytes()
    result = run(
        torchrun(3, "--prior", "deterministic", "--epochs", "4", "--resume", "--out", str(out))
    )
    assert result.returncode != 0
    assert "written by 2 process(es), resumed with 3; resume with 2 or with one" in result.stderr
    assert "sigma_pyro/" not in result.stderr  # no traceback through our code
    assert (out / STATE_FILE).read_bytes() == before


def _worker_of_rank(launcher: int, rank: int) -> int | None:
    """The pid of torchrun's worker process of ``rank``, from /proc."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if parent == launcher and f"RANK={rank}".encode() in environ:
            return int(proc.name)
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_a_killed_rank_fails_the_job_and_the_checkpoint_resumes(runs, tmp_path):
    root, _ = runs
    out = tmp_path / "killed"
    job = subprocess.Popen(
        torchrun(2, "--prior", "deterministic", "--epochs", "50", "--patience", "0",
                 "--out", str(out)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not (out / STATE_FILE).exists():
            assert job.poll() is None and time.monotonic() < deadline, "no checkpoint came"
            time.sleep(0.2)
        victim = _worker_of_rank(job.pid, 1)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        _, stderr = job.communicate(timeout=120)
    finally:
        job.kill()
    assert job.returncode != 0
    assert "sigma-pyro: rank 0:" in stderr or "exitcode  : -9" in stderr, stderr[-3000:]
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []
    # What the killed job left resumes in 2 ranks into the very run that was never killed.
    saved_epoch = safe_torch_load(out / STATE_FILE)["epoch"]
    assert 1 <= saved_epoch < 3
    resumed = run(torchrun(2, "--prior", "deterministic", "--epochs", "3", "--patience", "0",
                           "--resume", "--out", str(out)))  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    again, straight = history(out), history(root / "two")
    assert list(again["epoch"]) == [1, 2, 3]
    assert again["loss"].to_numpy() == pytest.approx(straight["loss"].to_numpy(), rel=1e-12)


def test_the_launcher_environment_is_read_and_checked():
    from sigma_pyro.runtime.distributed import DistributedError, World, rank_device

    assert World.from_environment({}) == World()
    world = World.from_environment({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert (world.rank, world.size, world.is_main, world.distributed) == (1, 2, False, True)
    # torchrun with one process is still a launched job: it goes through DDP.
    assert World.from_environment({"RANK": "0", "WORLD_SIZE": "1"}).distributed
    assert rank_device("cuda", world) == "cuda:1" and rank_device("cpu", world) == "cpu"
    with pytest.raises(DistributedError, match="RANK='x' is not an integer"):
        World.from_environment({"RANK": "x", "WORLD_SIZE": "2"})
    with pytest.raises(DistributedError, match="RANK=2 and WORLD_SIZE=2"):
        World.from_environment({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(DistributedError, match="give --device cuda"):
        rank_device("cuda:0", world)


def test_shards_split_a_batch_by_sequence_and_trim_padding():
    batch = make_batch(users=5)
    shards = [batch.shard(rank, 2) for rank in range(2)]
    assert sorted(int(i) for s in shards for i in s.index) == sorted(int(i) for i in batch.index)
    assert sum(s.num_tokens for s in shards) == batch.num_tokens
    for shard in shards:
        assert shard.mask[:, -1].any()  # no column of padding only
    assert batch.shard(0, 1) is batch
    assert batch.shard(5, 6) is None  # more ranks than sequences


def test_other_commands_refuse_to_run_under_torchrun(tmp_path):
    env = {**ENV, "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "sigma_pyro", "evaluate", "--model", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "sigma-pyro: error: rank 0: evaluate runs in one process; only train runs under torchrun"
    )


def test_a_rank_with_nothing_in_a_batch_still_takes_the_same_step(tmp_path):
    # Batches of one sequence leave rank 1 empty every step: its zero loss must still join
    # DDP's all-reduce, and the run must equal one process.
    tiny = ["--synthetic-users", "60", "--synthetic-items", "40", "--epochs", "1",
            "--batch-size", "1", "--prior", "deterministic"]  # fmt: skip
    two = run(torchrun(2, *tiny, "--out", str(tmp_path / "two")))
    assert two.returncode == 0, two.stderr[-3000:]
    one = run(one_process(*tiny, "--out", str(tmp_path / "one")))
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = history(tmp_path / "two"), history(tmp_path / "one")
    assert a["step"].tolist() == b["step"].tolist() == [60]
    assert a["loss"].to_numpy() == pytest.approx(b["loss"].to_numpy(), rel=1e-5)
