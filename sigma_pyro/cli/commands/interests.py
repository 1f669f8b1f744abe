"""``sigma-pyro interests``: what each learned hyper-category holds."""

from __future__ import annotations

from pathlib import Path

from sigma_pyro.cli.commands.common import load_model
from sigma_pyro.errors import SigmaPyroError


def register(sub) -> None:
    parser = sub.add_parser(
        "interests",
        help="list each hyper-category with its most typical items",
        description="For a model whose prior has interests (sigma, sigma-uniform): each "
        "hyper-category (prototype) with its share of the catalog (the items whose strongest "
        "assignment it is) and its most typical items, by assignment probability; with "
        "--items, their titles too.",
    )
    parser.add_argument("--model", type=Path, required=True, help="folder written by train")
    parser.add_argument(
        "-n", "--top", type=int, default=10, dest="top", help="items per interest (default 10)"
    )
    parser.add_argument(
        "--items", type=Path, metavar="FILE", help="CSV or TSV file of item ids and titles"
    )
    parser.add_argument(
        "--title-column", default="title", help="title column of --items (default title)"
    )
    parser.add_argument(
        "--item-column", default="item_id", help="item id column of --items (default item_id)"
    )
    parser.set_defaults(handler=run)


def run(args) -> int:
    from sigma_pyro.data.titles import read_titles

    if args.top < 1:
        raise SigmaPyroError(f"-n/--top must be at least 1, got {args.top}")
    titles = (
        None if args.items is None else read_titles(args.items, args.item_column, args.title_column)
    )
    table = load_model(args).describe_interests(args.top, titles)
    print(format_interests(table))
    return 0


def format_interests(table) -> str:
    """One block per interest: its share of the catalog, then its items, one a line."""
    blocks = []
    width = table["item"].str.len().max()
    for interest, rows in table.groupby("interest", sort=True):
        lines = [f"interest {interest}: {rows['share'].iloc[0]:.1%} of the catalog"]
        for row in rows.itertuples():
            title = f"  {row.title}" if "title" in table and row.title else ""
            lines.append(f"  {row.rank:3d}. {row.item:<{width}}  {row.probability:.3f}{title}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
