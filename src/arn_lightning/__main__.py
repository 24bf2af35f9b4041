"""``python -m arn_lightning`` is the ``arn-lightning`` command."""

import sys

from arn_lightning.cli import main

if __name__ == "__main__":
    sys.exit(main())
