"""Pieces shared by the sub-commands: config flags generated from the dataclasses."""

from __future__ import annotations

import argparse
import sys

from sigma_pyro.config import field_types, flag

# Flags whose name differs from the config field they set.
FLAG_NAMES = {"path": "--data"}
HELP = {
    "path": "interaction file; omit to use the built-in synthetic dataset",
    "format": "seq (user item item ...), inter (RecBole atomic file) or table (CSV/TSV/Parquet); "
    "inferred from the extension when omitted",
    "prior": "prior over z: sigma (semantic mixture, default), sigma-uniform (equal weights "
    "over active interests), gmm (learned mixture), vamp (VampPrior) or normal",
    "analytic_kl": "closed-form KL of z (TraceMeanField_ELBO); only with --prior normal",
    "pseudo_inputs": "number of learnable pseudo-sequences of the vamp prior",
    "epochs": "maximum number of epochs (early stopping usually ends sooner)",
    "kl_cap": "final weight of the KL of z (summed over dimensions) per real position, "
    "reached by a linear ramp; 1 is the plain ELBO",
    "kl_free_bits": "nats of z's KL per real position that cost nothing (free bits; default "
    "0); no effect on the deterministic prior",
    "decoder_input_dropout": "dropout on z at the decoder's input (default 0; earlier versions "
    "applied --hidden-dropout there)",
    "frequency_mix": "weight of BSARec's causal frequency filter against attention in every "
    "block (default 0: attention only)",
    "frequency_bins": "lowest FFT frequencies the filter keeps as its low band (default 3, "
    "BSARec's c = 5)",
    "interest_positions": "positions whose interests the interest head scores: all or last",
    "interest_subsample": "positions per batch scored by the interest head (0: all)",
    "ks": "cut-offs K for Recall@K and NDCG@K, e.g. 5,10,20,40",
    "posterior_samples": "0 scores with the posterior mean of z; S > 0 averages S predictives",
    "mask_history": "exclude items already in the history from the ranking (default on)",
    "device": "cpu, cuda or cuda:N",
    "progress": "progress bars while training (only ever drawn when stderr is a terminal)",
    "tensorboard": "TensorBoard event files under OUT/tensorboard (default on when the "
    "tensorboard package is installed: pip install 'sigma-pyro[tensorboard]')",
}


def add_config_flags(parser: argparse.ArgumentParser, sections: tuple[str, ...]) -> None:
    """One flag per configuration field of the given sections (``--hidden-size`` ...)."""
    groups = {}
    for name, (section, hint) in field_types().items():
        if section not in sections:
            continue
        group = groups.setdefault(section, parser.add_argument_group(f"{section} settings"))
        option = FLAG_NAMES.get(name, flag(name))
        kwargs = {"dest": f"cfg_{name}", "default": argparse.SUPPRESS, "help": HELP.get(name)}
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["metavar"] = name.upper()
        group.add_argument(option, **kwargs)


def add_jobs_flag(parser: argparse.ArgumentParser, runs: str) -> None:
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help=f"{runs} trained at once, each in its own process with an equal "
        "share of the CPU threads (default 1)",
    )


def chosen_preset(args: argparse.Namespace, overrides: dict) -> str | None:
    """--preset, else the synthetic preset when no --data is given (the built-in data)."""
    return args.preset or (None if "path" in overrides else "synthetic")


def config_overrides(args: argparse.Namespace) -> dict:
    """The configuration flags actually given, nested by section."""
    types = field_types()
    nested: dict = {}
    for key, value in vars(args).items():
        if key.startswith("cfg_"):
            name = key[4:]
            nested.setdefault(types[name][0], {})[name] = value
    return nested


def flat_overrides(args: argparse.Namespace) -> dict:
    return {k: v for section in config_overrides(args).values() for k, v in section.items()}


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def quiet(line: str) -> None:
    """``log`` under --quiet: progress lines go nowhere; errors and warnings do not pass
    through it."""


def log_unknown_items(report: dict) -> None:
    """Say what a saved model could not use of other data (the report of
    SequenceDataset.from_interactions)."""
    if report.get("users_changed"):
        log(
            f"{report['users_changed']} histories had {report['unknown_items']} items unknown "
            f"to the model, dropped; {report['users_dropped']} users dropped entirely"
        )
    if report.get("users_too_short"):
        log(
            f"{report['users_too_short']} users have fewer than 3 items known to the model "
            "(too few to evaluate; left out of the metrics)"
        )


def load_model(args):
    from sigma_pyro.api import SigmaRecommender

    return SigmaRecommender.load(args.model, **flat_overrides(args))
