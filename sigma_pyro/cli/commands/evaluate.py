"""``sigma-pyro evaluate``: full-ranking metrics of a saved model."""

from __future__ import annotations

import json
from pathlib import Path

from sigma_pyro.cli.commands.common import add_config_flags, load_model, log_unknown_items


def register(sub) -> None:
    parser = sub.add_parser(
        "evaluate",
        help="full-ranking metrics of a saved model",
        description="Recall@K, NDCG@K and MRR over all items on the "
        "leave-one-out validation and test splits of the data "
        "the model was trained on (or of --data); for a prior "
        "with interests also their health on the validation "
        "split, as train writes it to metrics.json.",
    )
    parser.add_argument("--model", type=Path, required=True, help="folder written by train")
    parser.add_argument("--split", choices=("valid", "test", "both"), default="both")
    add_config_flags(parser, ("data", "eval"))
    parser.set_defaults(handler=run)


def run(args) -> int:
    rec = load_model(args)
    rec.load_data()
    log_unknown_items(rec.data_report)
    splits = ("valid", "test") if args.split == "both" else (args.split,)
    out = {s: rec.evaluate(s) for s in splits}
    interests = rec.interest_summary("valid")
    if interests is not None:
        out["interests"] = interests
    print(json.dumps(out, indent=2))
    return 0
