"""``sigma-pyro recommend``: top-k raw item ids for users of the data or given histories,
printed as JSON, or for many users written to a CSV or Parquet table."""

from __future__ import annotations

import json
from pathlib import Path

from sigma_pyro.cli.commands.common import add_config_flags, load_model, log, log_unknown_items
from sigma_pyro.errors import DataError, SigmaPyroError


def register(sub) -> None:
    parser = sub.add_parser(
        "recommend",
        help="top-k raw item ids for users or histories",
        description="Recommend next items for users of the data (--user) or for histories "
        "given here (--history) and print JSON; or, for every user (--all-users) or those "
        "listed in a file (--users), write a table of columns user, rank, item, score to "
        "--out (CSV or Parquet by its extension). Items a user already has are never "
        "recommended. Unknown users and items are skipped with a warning.",
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
        "--all-users", action="store_true", help="every user of the data, written to --out"
    )
    parser.add_argument(
        "--users",
        type=Path,
        metavar="FILE",
        help="a file of raw user ids, one a line, whose recommendations go to --out",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="table for --all-users or --users: .csv, or .parquet/.pq (needs pyarrow)",
    )
    parser.add_argument(
        "-k",
        "--top",
        type=int,
        default=10,
        dest="top",
        help="number of items per user (default 10)",
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="with --user or --history: add to each item the user's interest that ranks it "
        "highest, its intensity and the history items that carry it (priors with interests)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bar or summary line on stderr"
    )
    add_config_flags(parser, ("data", "eval"))
    parser.set_defaults(handler=run)


def run(args) -> int:
    if args.top < 1:
        raise SigmaPyroError(f"-k/--top must be at least 1, got {args.top}")
    if args.all_users or args.users is not None:
        return write_table(args)
    if args.out is not None:
        raise SigmaPyroError("recommend: --out writes the table of --all-users or --users FILE")
    if not args.user and not args.history:
        raise SigmaPyroError(
            "recommend: give --user ID, --history 'ITEM ITEM ...', --all-users or --users FILE"
        )
    rec = load_model(args)
    results = {}
    if args.history:
        results.update(answer(rec, args.history, [h.split() for h in args.history], args))
    if args.user:
        rec.load_data()
        log_unknown_items(rec.data_report)
        histories = rec.user_histories(args.user)
        results.update(answer(rec, list(histories), list(histories.values()), args))
    print(json.dumps(results, indent=2))
    return 0


def answer(rec, keys: list[str], histories: list[list[str]], args) -> dict[str, list[dict]]:
    """The JSON entries of each history, explained with --explain."""
    if args.explain:
        ranked = [
            [
                {
                    "item": e["item"],
                    "score": round(e["score"], 4),
                    "interest": e["interest"],
                    "intensity": round(e["intensity"], 4),
                    "because": e["history"],
                }
                for e in row
            ]
            for row in rec.explain(histories, args.top)
        ]
    else:
        ranked = [
            [{"item": i, "score": round(s, 4)} for i, s in row]
            for row in rec.recommend(histories, args.top)
        ]
    return dict(zip(keys, ranked, strict=True))


def write_table(args) -> int:
    if args.all_users and args.users is not None:
        raise SigmaPyroError("recommend: give --all-users or --users FILE, not both")
    if args.out is None:
        raise SigmaPyroError(
            "recommend: --all-users and --users need --out FILE (.csv or .parquet)"
        )
    if args.user or args.history or args.explain:
        raise SigmaPyroError(
            "recommend: --user, --history and --explain print JSON; they do not combine "
            "with --all-users or --users"
        )
    from sigma_pyro.evaluation.export import table_format  # pandas and torch: not for --help

    table_format(args.out)
    users = None if args.all_users else read_user_ids(args.users)
    rec = load_model(args)
    rec.load_data()
    log_unknown_items(rec.data_report)
    rows = rec.write_recommendations(args.out, args.top, users, progress=not args.quiet)
    if not args.quiet:
        log(f"{rows} recommendations written to {args.out}")
    print(json.dumps({"out": str(args.out), "rows": rows}, indent=2))
    return 0


def read_user_ids(path: Path) -> list[str]:
    """Raw user ids, one a line; blank lines are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read it ({err})") from None
    users = [line.strip() for line in lines if line.strip()]
    if not users:
        raise DataError(f"{path}: no user ids in it")
    return users
