"""`python -m minitransformer` runs the same command line as `minitransformer`."""

import sys

from .commands.cli import main

sys.exit(main())
