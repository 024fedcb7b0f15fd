"""minitransformer: a minimal, explicit GPT in PyTorch, to read, train, sample from and step through."""

from .config import ModelConfig
from .generate import generate
from .model import GPT

__version__ = "0.1.0"
__all__ = ["GPT", "ModelConfig", "generate", "__version__"]
