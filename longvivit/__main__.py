"""``python -m longvivit ...``: the ``longvivit`` console script, for environments where it is not on PATH."""

import sys

from longvivit.cli import main

sys.exit(main())
