"""Writing files so that a crash never leaves a half-written one behind."""

import os
from collections.abc import Callable
from pathlib import Path


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(temp_path), then rename the temp file onto path.

    A rename within one folder is atomic: readers see the old file or the new one, never a mix,
    even if the process dies while writing.
    """
    temp = path.with_name(path.name + ".tmp")
    write(temp)
    os.replace(temp, path)
