"""`python -m ldm ...`: the command line (see ldm/cli/)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
