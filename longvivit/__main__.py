"""``python -m longvivit ...``: the ``longvivit`` console script, for environments where it is not on PATH."""

import sys

from longvivit.cli import main

if __name__ == "__main__":  # importing the module (pydoc, a test collector) runs nothing
    sys.exit(main())
