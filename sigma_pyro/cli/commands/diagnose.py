"""``sigma-pyro diagnose``: posterior diagnostics of a saved model with ArviZ."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from sigma_pyro.cli.commands.common import add_config_flags, load_model, log
from sigma_pyro.diagnostics.outputs import OUTPUTS

DESCRIPTION = [
    "Draw S samples from the guide for a seeded sample of test users (history = all items "
    "but the last, held-out = the last one) and diagnose the posterior:",
    "- PSIS Pareto k-hat of the amortised guide per user (Yao et al. 2018), and the "
    "PSIS-corrected held-out log-likelihood beside the plain one;",
    "- mixture health: component usage, collapsed components, posterior collapse (KL to "
    "the prior per latent dimension);",
    "- calibration: rank and randomised PIT of the held-out item, expected against observed "
    "hit rate at K = 1, 5, 10, 20;",
    "- with --seeds-models, R-hat and ESS of run-level quantities across independently "
    "trained seeds, one chain per model.",
]


def _wrapped(paragraphs: list[str]) -> str:
    return "\n".join(
        textwrap.fill(p, 78, subsequent_indent="  " if p.startswith("-") else "")
        for p in paragraphs
    )


def register(sub) -> None:
    parser = sub.add_parser(
        "diagnose",
        help="posterior diagnostics: PSIS k-hat, mixture health, calibration",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_wrapped(DESCRIPTION),
        epilog="outputs written to OUT:\n"
        + "\n".join(
            textwrap.fill(what, 78, initial_indent=f"  {name:<21} ", subsequent_indent=" " * 24)
            for name, what in OUTPUTS.items()
        ),
    )
    parser.add_argument("--model", type=Path, required=True, help="folder written by train")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--users",
        type=int,
        default=500,
        help="test users to sample (default 500; all if there are fewer)",
    )
    parser.add_argument(
        "--samples", type=int, default=100, help="guide draws per user (default 100, at least 21)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the user sample and of the draws (default 0)"
    )
    parser.add_argument(
        "--seeds-models",
        type=Path,
        nargs="+",
        default=[],
        metavar="DIR",
        help="other seeds of the same model and data, compared as chains",
    )
    add_config_flags(parser, ("data",))
    parser.set_defaults(handler=run)


def run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from sigma_pyro.diagnostics import diagnose

    rec = load_model(args)
    result = diagnose(
        rec,
        args.out,
        num_users=args.users,
        num_samples=args.samples,
        seed=args.seed,
        extra_models=args.seeds_models,
        log=log,
        name=str(args.model),
    )
    psis = result.summary["psis"]
    log(
        f"k-hat median {psis['khat_quantiles']['median']:.3f}, "
        f"{100 * psis['share_above_0.7']:.0f}% of users above 0.7"
    )
    print(result.files["report.md"])
    return 0
