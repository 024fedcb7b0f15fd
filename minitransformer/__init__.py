"""minitransformer: a minimal, explicit GPT in PyTorch, to read, train, sample from and step through.

The names below are imported when first used (PEP 562's module __getattr__), so that
`import minitransformer` does not import PyTorch: the command line starts, and turns a Ctrl-C
during PyTorch's import (seconds on a slow laptop) into its usual one line, before anything heavy.
`from minitransformer import GPT` works as always.
"""

import importlib
import sys
import types

__version__ = "0.3.0"

# name -> the module that defines it
_WHERE = {"ModelConfig": ".config", "generate": ".generate", "generate_batch": ".generate",
          "load_model": ".formats.load", "GPT": ".model", "train": ".training.api"}

__all__ = ["GPT", "ModelConfig", "generate", "generate_batch", "load_model", "train", "__version__"]


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module 'minitransformer' has no attribute {name!r}")


class _Package(types.ModuleType):
    """Importing the submodule minitransformer/generate.py would set the package's `generate` to that
    module; the function of the same name keeps it (as the eager `from .generate import generate`
    of earlier releases did)."""

    def __setattr__(self, name: str, value) -> None:
        if not (name in _WHERE and isinstance(value, types.ModuleType)):
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
