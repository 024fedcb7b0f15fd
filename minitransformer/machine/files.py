"""Writing files and folders so that a crash, a Ctrl-C or a power cut never leaves a half-written
one, and so that nothing the program did not write is ever deleted or replaced.

Design choices:
- Everything is written under a temporary name first, flushed to the disk with fsync, and only
  then renamed onto its real name. A rename within one folder is atomic: a reader sees the old
  version or the new one, never a mix.
- Temporary names cannot collide with a user's file or another process's: they are made by
  `tempfile` in the same folder and carry the process id, `.NAME.PID.RANDOM.mt-tmp`. A fixed name
  such as `NAME.tmp` could be a file the user keeps there, and two processes would share it.
- fsync before the rename matters for power cuts: without it the operating system may write the
  rename to disk before the file's contents, leaving a correctly named but empty file. The folder
  holding the renamed entry is fsynced too, so the rename itself reaches the disk.
- Replacing a folder swaps the new one and the current one in a single step (Linux's renameat2
  with RENAME_EXCHANGE), so the folder's name holds a complete copy at every moment, then deletes
  the old one. Where that call is missing (macOS, some file systems) it takes two renames: the
  current one moves aside to `.NAME.PID.RANDOM.mt-old`, then the new one takes its name; a crash
  between them leaves the previous folder complete under that name, where `previous_copies` finds
  it (checkpoint loading falls back on it).
- What may be deleted is decided by an exact record, never by a name's shape: a call deletes only
  the temporary it made itself (when writing fails: a full disk, Ctrl-C) and the old copy it moved
  aside itself (once its replacement is in place). A file of the user's that merely looks like
  ours (`.notes.99999.abc.mt-tmp`) is never touched; neither is a crash's leftover, which no
  running process made: `leftovers` lists those, and training names them for the user to delete.
- A temporary file or folder gets the mode the final one would get (an existing file's mode,
  else 0666 or 0777 less the umask), not tempfile's private 0600 and 0700. The mode is set once
  the contents are written, so a read-only file (0444) is replaced like any other. The umask is
  read from /proc, never by setting it: os.umask changes it for every thread of the process (a
  notebook's other threads would create world-writable files meanwhile).
- An error while writing names the file being written, never the hidden temporary.
"""

import ctypes
import ctypes.util
import errno
import functools
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import UserError, user_path

TEMPORARY, PREVIOUS = "mt-tmp", "mt-old"
# .NAME.PID.RANDOM.mt-tmp or .mt-old: the only names this module ever deletes.
OWN_NAME = re.compile(rf"^\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.(?P<kind>{TEMPORARY}|{PREVIOUS})$")


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
    """Delete a file or folder of ours if it is there; never raise (used while cleaning up)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def own_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0 checks that the process exists without touching it
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def current_umask() -> int:
    """The process's umask, read without changing it: from /proc (Linux), else from the mode that a
    probe file gets when created (setting the umask to read it would change it for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with tempfile.TemporaryDirectory() as folder:
        probe = os.path.join(folder, "probe")
        os.close(os.open(probe, os.O_CREAT | os.O_WRONLY, 0o777))
        return 0o777 & ~os.stat(probe).st_mode


def creation_mode(base: int) -> int:
    """base (0o666 for a file, 0o777 for a folder) less the process's umask, as open() would make it."""
    return base & ~current_umask()


def mode_for(path: Path, base: int) -> int:
    """The mode a file written at path gets: the existing one's, or a new file's."""
    try:
        return path.stat().st_mode & 0o7777 if path.exists() and not path.is_symlink() else creation_mode(base)
    except OSError:
        return creation_mode(base)


def own_leftovers(folder: Path, kind: str, name: str | None = None) -> Iterator[Path]:
    """Entries of folder named by this module (of kind TEMPORARY or PREVIOUS, for `name` if given)."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    for path in entries:
        match = OWN_NAME.match(path.name)
        if match and match["kind"] == kind and name in (None, match["name"]):
            yield path


def leftovers(folder: Path) -> list[Path]:
    """Entries of folder named like this module's temporaries or old copies whose process no longer
    runs: left by a crash, or a user's own files of that shape. Never deleted (only listed): no
    record says this process made them."""
    found = [*own_leftovers(folder, TEMPORARY), *own_leftovers(folder, PREVIOUS)]
    return sorted(path for path in found if not process_alive(int(OWN_NAME.match(path.name)["pid"])))


def previous_copies(path: Path) -> list[Path]:
    """Folders that a crash between the two renames of a replacement left for path, newest first."""
    def modified(copy: Path) -> float:
        try:
            return copy.stat().st_mtime
        except OSError:  # gone meanwhile (another process's save removed its own copy)
            return -1.0

    dated = [(modified(copy), copy) for copy in own_leftovers(path.parent, PREVIOUS, path.name)]
    return [copy for when, copy in sorted(dated, reverse=True) if when >= 0]


def naming(error: OSError, temp: Path, path: Path) -> OSError:
    """error, saying path where it said our temporary (or something inside it)."""
    for attribute in ("filename", "filename2"):
        name = getattr(error, attribute)
        if isinstance(name, str) and name.startswith(str(temp)):
            setattr(error, attribute, str(path) + name[len(str(temp)):])
    return error


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(temp_path), fsync it, then rename it onto path."""
    mode = mode_for(path, 0o666)
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=own_prefix(path), suffix=f".{TEMPORARY}")
    os.close(descriptor)
    temp = Path(name)
    try:
        write(temp)
        os.chmod(temp, mode)  # after writing: a read-only mode (0444) would refuse the write
        fsync_path(temp)
        os.replace(temp, path)
    except OSError as error:
        remove(temp)
        raise naming(error, temp, path)
    except BaseException:
        remove(temp)
        raise
    fsync_path(path.parent)


RENAME_EXCHANGE = 2  # linux/fs.h: swap the two names in one step


@functools.cache
def renameat2():
    """libc's renameat2 (glibc 2.28 and later), or None where it does not exist (macOS, musl)."""
    try:
        function = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return function


def exchange(first: Path, second: Path) -> bool:
    """Swap two existing entries' names in one step; False where the system or file system cannot."""
    function = renameat2()
    if function is None:
        return False
    at_cwd = -100  # AT_FDCWD: the paths are taken as they are
    if function(at_cwd, os.fsencode(first), at_cwd, os.fsencode(second), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def write_folder_atomically(path: Path, write: Callable[[Path], None], replace: bool = True) -> None:
    """Call write(temp_folder) to fill a new folder, then put it in place at path.

    replace: swap out a folder already at path (two renames; see the module's docstring). Without
    it, path must be absent or an empty folder: nothing that is there is ever replaced. A file at
    path is never replaced (FileExistsError).
    """
    if path.exists() and not path.is_dir():  # only a folder is ever swapped out, never a file
        raise FileExistsError(errno.EEXIST, "a file is in the way of a folder", str(path))
    mode = mode_for(path, 0o777)
    temp = Path(tempfile.mkdtemp(dir=path.parent, prefix=own_prefix(path), suffix=f".{TEMPORARY}"))
    old = None
    try:
        write(temp)
        file_mode, folder_mode = creation_mode(0o666), creation_mode(0o777)
        for inside in temp.rglob("*"):  # some writers (safetensors) make their files private: ours are not
            if not inside.is_symlink():
                os.chmod(inside, folder_mode if inside.is_dir() else file_mode)
        os.chmod(temp, mode)  # after writing: a read-only folder's mode (0555) would refuse the files
        fsync_tree(temp)
        if path.is_dir() and not replace:
            path.rmdir()  # raises OSError if anything is in it (callers check before writing)
            os.replace(temp, path)
        elif path.exists() and exchange(temp, path):
            old = temp  # temp's name now holds the previous folder
        else:
            if path.exists():
                # A name made exclusively (mkdtemp), so the rename can replace nothing but our empty folder.
                old = Path(tempfile.mkdtemp(dir=path.parent, prefix=own_prefix(path), suffix=f".{PREVIOUS}"))
                if path.is_symlink():  # a link cannot be renamed onto a folder: free the name first
                    old.rmdir()
                os.replace(path, old)
            os.replace(temp, path)
    except BaseException as error:
        remove(temp)  # after a swap it holds the previous folder, which the new one has replaced
        if old is not None and old != temp:
            try:
                old.rmdir()  # the name made for the previous folder, still empty if it never moved there
            except OSError:
                pass  # it holds the previous folder: left where previous_copies finds it
        raise naming(error, temp, path) if isinstance(error, OSError) else error
    fsync_path(path.parent)
    if old is not None:
        remove(old)  # the folder this call moved aside: exactly what it made, nothing found by name


def check_output_file(path: str | Path, flag: str) -> Path:
    """Refuse, before any work, an output file whose folder does not exist or that is a folder."""
    path = user_path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file name, e.g. {path / 'out'}")
    if not path.parent.is_dir():
        raise UserError(f"{flag} {path}: the folder {path.parent} does not exist; create it or choose another file")
    return path
