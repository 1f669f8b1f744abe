"""``sigma-pyro results``: the results table of docs/results.md from the recorded runs."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    parser = sub.add_parser(
        "results",
        help="render the per-dataset results table from recorded runs",
        description="Reads one results.csv of `sigma-pyro compare` per dataset (the file's "
        "stem names the dataset) and writes a Markdown table per dataset: mean ± "
        "std over seeds of each variant, the best mean in bold, paired t-tests of "
        "sigma against normal and deterministic, and the command, machine, "
        "commits and wall time that reproduce it.",
    )
    parser.add_argument(
        "--runs",
        type=Path,
        nargs="+",
        required=True,
        metavar="CSV",
        help="results CSVs, one per dataset, e.g. results/*.csv",
    )
    parser.add_argument(
        "--tuning",
        nargs="*",
        default=[],
        metavar="[DATASET=]CSV",
        help="tuning.csv files of `sigma-pyro tune`, each named after its dataset like the "
        "--runs files, or given as DATASET=CSV (e.g. Office_Products=results/tuning/"
        "office-shared-network/tuning.csv); a dataset may have several",
    )
    parser.add_argument(
        "--published",
        type=Path,
        metavar="CSV",
        help="published numbers on the same files (dataset, model, source and metric "
        "columns), set beside sigma's and drawn in the figure, e.g. results/published.csv",
    )
    parser.add_argument(
        "--figure",
        type=Path,
        metavar="PNG",
        help="also draw test Recall@20 and NDCG@20 of every variant, with error bars over "
        "seeds, into this PNG and show it in the Markdown",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("docs/results.md"),
        help="Markdown file to write (default: %(default)s)",
    )
    parser.set_defaults(handler=run)


def run(args) -> int:
    from sigma_pyro.experiments.results_table import write_results

    print(write_results(args.runs, args.out, args.tuning, args.published, args.figure), end="")
    return 0
