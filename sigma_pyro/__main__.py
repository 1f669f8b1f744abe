"""``python -m sigma_pyro``, the form ``torchrun -m sigma_pyro train ...`` launches."""

import sys

from sigma_pyro.cli.main import main

sys.exit(main())
