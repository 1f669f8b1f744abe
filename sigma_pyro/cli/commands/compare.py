"""``sigma-pyro compare``: train a grid of priors x seeds and summarise it."""

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
        "compare",
        help="train several priors over several seeds and compare them",
        description="Trains every (prior, seed) with the same data and settings into "
        "OUT/runs/<prior>-seed<k>, and writes OUT/results.csv (one row per run: "
        "test metrics, ELBO and IWAE log-likelihood per token, diversity, epochs, "
        "time; rewritten after each run, so rerunning the same command resumes "
        "the grid) and OUT/summary.md (mean ± std per prior and paired t-tests "
        "against the normal prior).",
    )
    parser.add_argument(
        "--preset",
        help=f"settings preset: {', '.join(PRESET_NAMES)} or a YAML "
        "file (default: synthetic when --data is omitted)",
    )
    parser.add_argument(
        "--priors",
        default="normal,gmm,vamp,sigma,sigma-uniform",
        help="comma-separated priors to compare (default: %(default)s)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=3,
        help="number of seeds per prior, counting up from --seed (default 3)",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--iwae-samples",
        type=int,
        default=20,
        help="importance samples of the held-out log-likelihood (default 20; "
        "0 skips it, which on Beauty-sized data saves several epochs' "
        "worth of time per run)",
    )
    add_jobs_flag(parser, "runs")
    add_config_flags(parser, ("data", "model", "train", "eval"))
    parser.set_defaults(handler=run)


def run(args) -> int:
    from sigma_pyro.experiments.compare import SUMMARY, run_comparison

    overrides = flat_overrides(args)
    preset = chosen_preset(args, overrides)
    priors = [p.strip() for p in args.priors.split(",") if p.strip()]
    run_comparison(
        args.out,
        priors,
        args.seeds,
        preset,
        overrides,
        args.iwae_samples,
        progress=overrides.get("progress", True),
        log=log,
        jobs=args.jobs,
    )
    print((args.out / SUMMARY).read_text(encoding="utf-8"))
    return 0
