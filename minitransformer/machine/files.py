"""Writing files and folders so that a crash, a Ctrl-C or a power cut never leaves a half-written one.

Design choices:
- Everything is written under a temporary name first (`NAME.tmp`), flushed to the disk with
  fsync, and only then renamed onto its real name. A rename within one folder is atomic: a reader
  sees the old version or the new one, never a mix.
- fsync before the rename matters for power cuts: without it the operating system may write the
  rename to disk before the file's contents, leaving a correctly named but empty file. The folder
  holding the renamed entry is fsynced too, so the rename itself reaches the disk.
- If writing fails (a full disk, Ctrl-C), the temporary file or folder is removed and the error
  goes on up: the previous version is still in place.
"""

import os
import shutil
from collections.abc import Callable
from pathlib import Path


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's contents to the disk (folders: their list of entries)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:  # some systems (Windows) cannot open a folder; there is nothing more to do
        return
    try:
        os.fsync(descriptor)
    except OSError:  # a few file systems refuse fsync on folders; the data itself was synced
        pass
    finally:
        os.close(descriptor)


def fsync_tree(folder: Path) -> None:
    """fsync every file in folder (and below), then the folders themselves."""
    for path in sorted(folder.rglob("*"), reverse=True):  # files before the folders holding them
        fsync_path(path)
    fsync_path(folder)


def remove(path: Path) -> None:
    """Delete a file or folder if it is there; never raise (used while cleaning up after an error)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(temp_path), fsync it, then rename it onto path."""
    temp = path.with_name(path.name + ".tmp")
    try:
        write(temp)
        fsync_path(temp)
        os.replace(temp, path)
    except BaseException:
        remove(temp)
        raise
    fsync_path(path.parent)


def write_folder_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(temp_folder) to fill a new folder, then swap it in for the folder at path.

    Two renames swap a folder: path -> path.old, then temp -> path. A crash between them leaves
    the previous folder complete under `path.old`, which readers of checkpoints fall back to.
    """
    temp, old = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")
    remove(temp)
    try:
        temp.mkdir(parents=True)
        write(temp)
        fsync_tree(temp)
        if path.exists():
            remove(old)
            os.replace(path, old)
        os.replace(temp, path)
    except BaseException:
        remove(temp)
        raise
    fsync_path(path.parent)
    remove(old)
