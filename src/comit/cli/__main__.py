"""``python -m comit.cli`` (and ``torchrun -m comit.cli``): the ``comit`` command."""

import sys

from .app import main

if __name__ == "__main__":
    sys.exit(main())
