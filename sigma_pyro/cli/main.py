"""The ``sigma-pyro`` command: a thin layer over :mod:`sigma_pyro.api`."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
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


# The commands that can run as one rank of a torchrun job; the others are one-process tools.
DISTRIBUTED_COMMANDS = ("train",)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_process_memory()
    launched = "WORLD_SIZE" in os.environ  # torchrun's environment, even for one process
    with warnings.catch_warnings():
        show_warnings_as_lines()
        try:
            if launched and args.command not in DISTRIBUTED_COMMANDS:
                raise SigmaPyroError(
                    f"{args.command} runs in one process; only "
                    f"{', '.join(DISTRIBUTED_COMMANDS)} runs under torchrun"
                )
            if launched:
                signal.signal(signal.SIGTERM, _stop)
            return args.handler(args)
        except _Stopped:
            # torchrun stops the other ranks with SIGTERM when one fails; unwinding (rather
            # than dying on the signal) lets an interrupted write remove its temporary file.
            print(f"sigma-pyro: {_rank_prefix(launched)}stopped by the launcher", file=sys.stderr)
            return 143
        except SigmaPyroError as err:
            print(f"sigma-pyro: error: {_rank_prefix(launched)}{err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("sigma-pyro: interrupted", file=sys.stderr)
            return 130
        except Exception as err:
            if not (launched and _is_distributed_failure(err)):
                raise
            # A peer died or hung: say so in one line and let torchrun stop the job.
            print(
                f"sigma-pyro: error: {_rank_prefix(launched)}lost contact with the other ranks "
                f"({str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__})",
                file=sys.stderr,
            )
            return 1


class _Stopped(BaseException):
    """SIGTERM, raised where the rank happens to be."""


def _stop(signum, frame):
    raise _Stopped


def _rank_prefix(launched: bool) -> str:
    return f"rank {os.environ.get('RANK', '?')}: " if launched else ""


def _is_distributed_failure(err: Exception) -> bool:
    import torch.distributed as dist

    return isinstance(err, dist.DistError)


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
