"""``sigma-pyro recommend``: top-k raw item ids for users of the data or given histories."""

from __future__ import annotations

import json
from pathlib import Path

from sigma_pyro.cli.commands.common import add_config_flags, load_model, log_unknown_items
from sigma_pyro.errors import SigmaPyroError


def register(sub) -> None:
    parser = sub.add_parser(
        "recommend",
        help="top-k raw item ids for users or histories",
        description="Recommend next items for users of the data (--user) "
        "or for histories given here (--history); prints JSON.",
    )
    parser.add_argument("--model", type=Path, required=True, help="folder written by train")
    parser.add_argument(
        "--user", action="append", default=[], help="raw user id from the data (repeatable)"
    )
    parser.add_argument(
        "--history",
        action="append",
        default=[],
        help="space-separated raw item ids, oldest first (repeatable)",
    )
    parser.add_argument(
        "-k",
        "--top",
        type=int,
        default=10,
        dest="top",
        help="number of items per user (default 10)",
    )
    add_config_flags(parser, ("data", "eval"))
    parser.set_defaults(handler=run)


def run(args) -> int:
    if args.top < 1:
        raise SigmaPyroError(f"-k/--top must be at least 1, got {args.top}")
    if not args.user and not args.history:
        raise SigmaPyroError("recommend: give --user ID or --history 'ITEM ITEM ...'")
    rec = load_model(args)
    results = {}
    if args.history:
        for history, items in zip(
            args.history, rec.recommend([h.split() for h in args.history], args.top), strict=True
        ):
            results[history] = [{"item": i, "score": round(s, 4)} for i, s in items]
    if args.user:
        rec.load_data()
        log_unknown_items(rec.data_report)
        for user, items in zip(args.user, rec.recommend_users(args.user, args.top), strict=True):
            results[user] = [{"item": i, "score": round(s, 4)} for i, s in items]
    print(json.dumps(results, indent=2))
    return 0
