"""``sigma-pyro tune``: one-at-a-time sweeps of settings, judged on validation only."""

from __future__ import annotations

from pathlib import Path

from sigma_pyro.cli.commands.common import (
    add_config_flags,
    add_jobs_flag,
    chosen_preset,
    flat_overrides,
    log,
)
from sigma_pyro.config import PRESET_NAMES


def register(sub) -> None:
    parser = sub.add_parser(
        "tune",
        help="sweep settings one at a time around a preset, on validation only",
        description="Trains the preset and then each value of each --sweep with every other "
        "setting at the preset, all on the same seed, and ranks them by the "
        "validation early-stopping metric at each run's best epoch. The test split "
        "is never scored. Writes OUT/tuning.csv (resumable: rerun the same command) "
        "and OUT/tuning.md.",
    )
    parser.add_argument(
        "--preset",
        help=f"settings preset: {', '.join(PRESET_NAMES)} or a YAML "
        "file (default: synthetic when --data is omitted)",
    )
    parser.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="a setting and the values to try, e.g. num_interests=2,8; repeat for more settings",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    add_jobs_flag(parser, "settings")
    add_config_flags(parser, ("data", "model", "train", "eval"))
    parser.set_defaults(handler=run)


def run(args) -> int:
    from sigma_pyro.experiments.tuning import REPORT, parse_sweep, run_tuning

    overrides = flat_overrides(args)
    preset = chosen_preset(args, overrides)
    sweeps = [parse_sweep(spec) for spec in args.sweep]
    run_tuning(
        args.out,
        sweeps,
        preset,
        overrides,
        progress=overrides.get("progress", True),
        log=log,
        jobs=args.jobs,
    )
    print((args.out / REPORT).read_text(encoding="utf-8"))
    return 0
