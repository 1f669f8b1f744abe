"""``sigma-pyro tune``: an Optuna study of settings around a preset, on validation only."""

from __future__ import annotations

from pathlib import Path

from sigma_pyro.cli.commands.common import (
    add_config_flags,
    add_jobs_flag,
    chosen_preset,
    flat_overrides,
    log,
)
from sigma_pyro.config import PRESET_NAMES, space_names


def register(sub) -> None:
    parser = sub.add_parser(
        "tune",
        help="search settings with an Optuna study, on validation only",
        description="Trains the preset with the settings each trial samples from --space, "
        "all on the same seed (--seed, which also seeds the sampler), and ranks the trials "
        "by the best validation early-stopping metric over their epochs; the pruner stops "
        "trials that trail. The test split is never scored. The study is kept in --storage: "
        "rerun the same command to resume it, with a larger --trials to extend it. Writes "
        "OUT/tuning.csv and OUT/tuning.md after every trial. Config flags fix a setting for "
        "every trial.",
    )
    parser.add_argument(
        "--space",
        required=True,
        action="append",
        metavar="FILE",
        help="search space: a YAML file of settings and ranges, or a shipped one: "
        f"{', '.join(space_names())}; given more than once, the spaces search together "
        "(a setting may be in one of them only)",
    )
    parser.add_argument(
        "--trials",
        type=int,
        required=True,
        metavar="N",
        help="finished (complete or pruned) trials the study should have in all",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--preset",
        help=f"settings preset: {', '.join(PRESET_NAMES)} or a YAML "
        "file (default: synthetic when --data is omitted)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="start no trial after this long (a running one finishes)",
    )
    parser.add_argument(
        "--storage", metavar="URL", help="Optuna storage (default: sqlite:///OUT/study.db)"
    )
    parser.add_argument("--study-name", help="default: the name of the --out folder")
    parser.add_argument(
        "--sampler",
        default="tpe",
        help="tpe (default), random, or grid (every combination; categorical settings only)",
    )
    parser.add_argument(
        "--pruner",
        default="median",
        help="median (default: stop a trial below the median of the others at the same "
        "epoch, from the fifth epoch and the sixth trial) or none",
    )
    add_jobs_flag(parser, "trials")
    add_config_flags(parser, ("data", "model", "train", "eval"))
    parser.set_defaults(handler=run)


def run(args) -> int:
    from sigma_pyro.experiments.tuning import run_tuning
    from sigma_pyro.experiments.tuning_report import REPORT

    overrides = flat_overrides(args)
    run_tuning(
        args.out,
        args.space,
        args.trials,
        chosen_preset(args, overrides),
        overrides,
        timeout=args.timeout,
        storage=args.storage,
        study_name=args.study_name,
        sampler=args.sampler,
        pruner=args.pruner,
        jobs=args.jobs,
        log=log,
    )
    print((args.out / REPORT).read_text(encoding="utf-8"))
    return 0
