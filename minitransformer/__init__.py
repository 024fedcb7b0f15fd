"""minitransformer: a minimal, explicit GPT in PyTorch, to read, train, sample from and step through."""

__version__ = "0.3.0"

from .config import ModelConfig  # noqa: E402  (the version comes first: formats/checkpoint.py imports it)
from .generate import generate, generate_batch  # noqa: E402
from .formats.load import load_model  # noqa: E402
from .model import GPT  # noqa: E402
from .training.api import train  # noqa: E402

__all__ = ["GPT", "ModelConfig", "generate", "generate_batch", "load_model", "train", "__version__"]
