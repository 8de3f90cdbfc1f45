"""``python -m metajudge.cli`` is the ``metajudge`` command."""

import sys

from metajudge.cli import main

sys.exit(main())
