"""``sigma-pyro bench``: speed and memory of training and evaluation."""

from __future__ import annotations

import json
from pathlib import Path

from sigma_pyro.cli.commands.common import add_config_flags, config_overrides, log
from sigma_pyro.config import load_config
from sigma_pyro.errors import ConfigError


def register(sub) -> None:
    parser = sub.add_parser(
        "bench",
        help="benchmark training and evaluation speed and memory",
        description="Times training epochs (median over --epochs after one warm-up) with Pyro "
        "SVI and with the same objective in plain PyTorch, one full-ranking "
        "evaluation of every user, peak resident memory and FLOPs; prints and "
        "writes OUT/bench.json. Default data: ../shared/data/Beauty.txt when "
        "present, else synthetic data of the same shape. Run in a fresh process: "
        "peak memory is the process's.",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench"), help="output folder")
    parser.add_argument("--preset", default="beauty", help="settings preset (default beauty)")
    parser.add_argument(
        "--bench-epochs", type=int, default=3, help="measured epochs per implementation (default 3)"
    )
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="instead, measure full vs sampled softmax on synthetic catalogs of "
        "10^4, 10^5 and 10^6 items (OUT/scaling.json); each in its own process",
    )
    parser.add_argument(
        "--scaling-sizes",
        default="10000,100000,1000000",
        help="catalog sizes for --scaling (comma-separated)",
    )
    add_config_flags(parser, ("data", "model", "train", "eval"))
    parser.set_defaults(handler=run)


def run(args) -> int:
    from sigma_pyro.bench.throughput import DEFAULT_DATA, run_benchmark
    from sigma_pyro.runtime.checkpoint import atomic_write_json

    if args.bench_epochs < 1:
        raise ConfigError(f"--bench-epochs must be at least 1, got {args.bench_epochs}")
    if args.scaling:
        from sigma_pyro.bench.scaling import run_scaling

        try:
            sizes = tuple(int(v) for v in args.scaling_sizes.split(","))
        except ValueError:
            raise ConfigError(
                f"--scaling-sizes must be comma-separated integers, got {args.scaling_sizes!r}"
            ) from None
        if min(sizes) < 2:
            raise ConfigError("--scaling-sizes must be at least 2 items each")
        rows = run_scaling(sizes, log=log)
        atomic_write_json(rows, args.out / "scaling.json")
        print(json.dumps(rows, indent=2))
        return 0
    overrides = config_overrides(args)
    if "path" not in overrides.get("data", {}) and DEFAULT_DATA.is_file():
        overrides.setdefault("data", {})["path"] = str(DEFAULT_DATA)
    config = load_config(args.preset, overrides)
    result = run_benchmark(config, args.bench_epochs, log=log)
    atomic_write_json(result, args.out / "bench.json")
    print(json.dumps(result, indent=2))
    return 0
