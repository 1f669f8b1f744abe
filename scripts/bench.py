"""Benchmark entry point: the same as ``sigma-pyro bench`` (see ``--help``)."""

import sys

from sigma_pyro.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
