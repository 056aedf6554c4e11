"""``python -m neurocert``: the command line (see :mod:`neurocert.cli`)."""

import sys

from .cli import main

sys.exit(main())
