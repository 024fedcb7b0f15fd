"""`python -m minitransformer` runs the same command line as `minitransformer`."""

import sys

from .cli import main

sys.exit(main())
