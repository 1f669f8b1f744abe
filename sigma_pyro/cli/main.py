"""The ``sigma-pyro`` command: a thin layer over :mod:`sigma_pyro.api`."""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from sigma_pyro.cli.commands import COMMANDS
from sigma_pyro.errors import SigmaPyroError, SigmaPyroWarning
from sigma_pyro.runtime.allocator import configure_process_memory


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sigma-pyro",
        description="SIGMA, the semantic Gaussian mixture VAE for sequential recommendation, "
        "trained with SVI in Pyro.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"sigma_pyro.cli.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_process_memory()
    with warnings.catch_warnings():
        show_warnings_as_lines()
        try:
            return args.handler(args)
        except SigmaPyroError as err:
            print(f"sigma-pyro: error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("sigma-pyro: interrupted", file=sys.stderr)
            return 130


def show_warnings_as_lines() -> None:
    """Print each SigmaPyroWarning as one ``sigma-pyro: warning:`` line on stderr, every
    time (not once per call site), and leave other warnings to Python."""
    warnings.simplefilter("always", SigmaPyroWarning)
    others = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, SigmaPyroWarning):
            print(f"sigma-pyro: warning: {message}", file=sys.stderr, flush=True)
        else:
            others(message, category, filename, lineno, file, line)

    warnings.showwarning = show


if __name__ == "__main__":
    sys.exit(main())
