"""``cl-deploy`` / ``python -m deploy``: see :mod:`deploy.cli`."""

import sys

from deploy.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
