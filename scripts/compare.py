#!/usr/bin/env python
"""The prior comparison grid as a script: the same as ``sigma-pyro compare ARGS``."""

import sys

from sigma_pyro.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["compare", *sys.argv[1:]]))
