#!/usr/bin/env python
"""The results table as a script: the same as ``sigma-pyro results ARGS``."""

import sys

from sigma_pyro.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["results", *sys.argv[1:]]))
