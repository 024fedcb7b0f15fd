"""Sample from a checkpoint: `python scripts/sample.py --checkpoint runs/tiny`; the same as `minitransformer sample`."""

import sys

from minitransformer.commands.cli import main

sys.exit(main(["sample", *sys.argv[1:]]))
