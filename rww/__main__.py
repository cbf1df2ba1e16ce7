"""``python -m rww``: the ``rww`` command line (see :mod:`rww.cli`)."""

import sys

from .cli import main

sys.exit(main())
