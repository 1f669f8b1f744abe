"""Epoch time of one process against N data-parallel processes, for docs/scaling.md.

Trains the same configuration for a few epochs as (a) one process with all the threads
given, (b) one process with one thread per process and (c) ``torchrun --nproc-per-node N``
with one thread each, one after another on the same machine, and prints the mean epoch
time (training plus the sharded validation, from each run's history.csv, leaving out the
first epoch's warm-up) with the ratios against (a) and (b). Every run writes under OUT.

    .venv/bin/python scripts/distributed_epoch_time.py --out runs/ddp-epoch-time \
        --threads 2 --nproc 2 -- --data ../shared/data/Office_Products.txt --preset office
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd


def train(out: Path, flags: list[str], threads: int, nproc: int) -> float:
    """Mean seconds of epochs 2.. of one run."""
    launcher = (
        [sys.executable, "-m", "sigma_pyro"]
        if nproc == 1
        else [sys.executable, "-m", "torch.distributed.run", "--standalone",
              f"--nproc-per-node={nproc}", "-m", "sigma_pyro"]
    )  # fmt: skip
    command = [*launcher, "train", *flags, "--no-progress", "--patience", "0", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    seconds = pd.read_csv(out / "history.csv")["seconds"]
    return float(seconds.iloc[1:].mean() if len(seconds) > 1 else seconds.mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads of (a)")
    parser.add_argument("--nproc", type=int, default=2, help="processes of (c)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("train_flags", nargs="*", help="flags for sigma-pyro train, after --")
    args = parser.parse_args()
    flags = [*args.train_flags, "--epochs", str(args.epochs)]
    rows = []
    for name, threads, nproc in (
        (f"1 process x {args.threads} threads", args.threads, 1),
        ("1 process x 1 thread", 1, 1),
        (f"{args.nproc} processes x 1 thread (gloo)", 1, args.nproc),
    ):
        folder = args.out / name.split(" (")[0].replace(" ", "-")
        seconds = train(folder, flags, threads, nproc)
        rows.append({"run": name, "epoch_seconds": seconds})
        print(f"{name}: {seconds:.1f} s/epoch", file=sys.stderr, flush=True)
    table = pd.DataFrame(rows)
    table["vs_first"] = table["epoch_seconds"] / table["epoch_seconds"].iloc[0]
    table["vs_one_thread"] = table["epoch_seconds"] / table["epoch_seconds"].iloc[1]
    table.to_csv(args.out / "epoch_time.csv", index=False)
    print("| run | s/epoch | vs first | vs 1 thread |\n|---|---|---|---|")
    for row in table.itertuples(index=False):
        cells = (
            row.run,
            f"{row.epoch_seconds:.1f}",
            f"{row.vs_first:.2f}",
            f"{row.vs_one_thread:.2f}",
        )
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
