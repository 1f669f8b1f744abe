#!/usr/bin/env python
"""Validation-only tuning (an Optuna study) as a script: the same as ``sigma-pyro tune ARGS``."""

import sys

from sigma_pyro.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
