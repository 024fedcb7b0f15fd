"""Train a model: `python scripts/train.py --config configs/tiny.toml`; the same as `minitransformer train`."""

import sys

from minitransformer.commands.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
