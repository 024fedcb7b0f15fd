"""The `minitransformer` command line: argument parsing only; the work lives in other modules.

Design choice: a `UserError` raised anywhere below is printed as one line on stderr with exit
code 2; any other exception is a bug and keeps its traceback.
"""

import argparse
import sys

from . import __version__
from .errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minitransformer",
        description="A minimal, explicit GPT: train it, sample from it, look inside it.",
    )
    parser.add_argument("--version", action="version", version=f"minitransformer {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.run(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
