"""The run folder: one training at a time, never overwritten by accident, its metrics kept readable.

A run folder holds `last/` and `best/` (checkpoints), `metrics.jsonl` (one JSON row per
evaluation), `data/` (the tokenised corpus) and, while a training runs, `run.lock`.

Design choices:
- Any trace of a run (a checkpoint, one left aside by a crash between two renames, or
  metrics) means "this folder holds a run": a fresh training refuses it, so a trained model is
  never replaced by a new one by mistake.
- `RunLock` holds an exclusive lock on `run.lock` for the life of a training, with the pid
  written inside for the message a second training gets. The operating system drops the lock when
  the process dies, however it dies, so a lock file left behind by a crash is stale: the next
  training takes it over and says so.
- Leftover temporaries of a crashed process (machine/files.py names them so that they can never
  be a user's file) are deleted at start; nothing else in the folder is touched.
- A damaged metrics row (a crash while appending) is dropped with a warning when a run resumes.
"""

import json
import math
import os
from pathlib import Path

from ..errors import UserError
from ..machine.files import previous_copies, process_alive, remove, write_atomically

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; fall back on the pid check alone
    fcntl = None

CHECKPOINTS = ("last", "best")
RUN_TRACES = (*CHECKPOINTS, "metrics.jsonl")
LOCK_FILE = "run.lock"
# What a checkpoint folder holds when minitransformer wrote it (model.pt: checkpoints of version 0.1).
CHECKPOINT_FILES = ("model.safetensors", "config.json", "tokenizer.json", "state.pt", "model.pt")
DATA_FILES = ("meta.json", "train.bin", "val.bin")  # all that a data folder of ours holds (training/data.py)
NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)  # open() fails on a symbolic link instead of writing through it


def what_we_wrote(folder: Path) -> str | None:
    """What kind of folder of ours `folder` is ("a run", "a checkpoint", "tokenised data", "a
    model"), or None: a run folder holds checkpoints or metrics, a checkpoint our config.json, a
    data folder our meta.json, an exported model config.json and model.safetensors."""
    def keys(name: str) -> set:
        try:
            content = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            return set()
        return set(content) if isinstance(content, dict) else set()

    if any(os.path.lexists(folder / name) for name in (*RUN_TRACES, LOCK_FILE)):
        return "a run"
    if {"model", "run", "version"} <= keys("config.json"):
        return "a checkpoint"
    if {"corpus_sha256", "tokenizer", "dtype"} <= keys("meta.json"):
        return "tokenised data"
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return "a model"
    return None


def check_not_inside_ours(out_dir: Path) -> None:
    """Refuse a run folder inside a folder the program wrote (`--out runs/x/last`, `--out runs/x/data`),
    or that is a checkpoint, data or model folder itself: a save would mix it into that folder, which
    could then no longer be resumed or loaded."""
    try:
        resolved = out_dir.resolve()  # out_dir comes through user_path: any ~ is expanded already
    except (OSError, RuntimeError):
        return  # make_run_folder names the problem
    for folder in (resolved, *resolved.parents):
        kind = what_we_wrote(folder) if folder.is_dir() else None
        if kind is not None and (folder != resolved or kind != "a run"):
            where = "is" if folder == resolved else f"is inside {folder}, which holds"
            raise UserError(f"--out {out_dir} {where} {kind} written by minitransformer; a run there would mix its "
                            "files into it: choose a folder outside it, e.g. --out runs/new")


def make_run_folder(out_dir: Path) -> None:
    """Create out_dir (and its parents), or raise one line saying why it cannot be."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"cannot make the run folder {out_dir}: a file of that name is in the way; choose another --out")
    except OSError as error:
        raise UserError(f"cannot make the run folder {out_dir} ({error.strerror}); choose another --out")


def check_no_run(out_dir: Path) -> None:
    """Refuse a fresh training in a folder that already holds (a trace of) a run."""
    found = [name for name in RUN_TRACES if (out_dir / name).exists()]
    found += [path.name for name in CHECKPOINTS for path in previous_copies(out_dir / name)]
    if found:
        raise UserError(
            f"{out_dir} already holds a run ({', '.join(found)}); pass --resume to continue it, "
            "or --out DIR to train elsewhere"
        )


def check_ours(out_dir: Path) -> None:
    """Refuse, before anything is written, a run folder where training would write through or
    replace what is not ours: a symbolic link where it writes (run.lock, metrics.jsonl, data/, a
    checkpoint or a file in one), or a checkpoint folder holding files it did not write (each save
    replaces the folder whole)."""
    for name in (LOCK_FILE, "metrics.jsonl", "data", *CHECKPOINTS):
        path = out_dir / name
        if path.is_symlink():
            raise UserError(f"{path} is a symbolic link; minitransformer never writes through a link in a run "
                            "folder: remove the link, or choose another --out")
    for name in CHECKPOINTS:
        folder = out_dir / name
        foreign = sorted(entry.name for entry in folder.iterdir() if entry.is_symlink()
                         or entry.name not in CHECKPOINT_FILES) if folder.is_dir() else []
        if foreign:
            raise UserError(f"{folder} holds {', '.join(foreign)}, which minitransformer did not write; every save "
                            f"replaces {name}/ whole, so move {'it' if len(foreign) == 1 else 'them'} out first, or "
                            "choose another --out")


def check_has_run(out_dir: Path) -> None:
    """Refuse --resume for a folder without a last checkpoint, saying what to do instead."""
    if not (out_dir / "last").is_dir() and not previous_copies(out_dir / "last"):
        hint = f"; to fine-tune the model in it, start a new run with --init-from {out_dir}" if \
            (out_dir / "config.json").is_file() else ""
        raise UserError(f"{out_dir} holds no run to resume (no last/ checkpoint); train without --resume{hint}")


class RunLock:
    """Exclusive ownership of a run folder while a training writes to it.

    with RunLock(out_dir, say=print) as lock:
        ...  # train; a second RunLock on out_dir raises UserError naming this process
        lock.check_held()  # before writing: raises UserError if the folder or its lock is gone
    """

    def __init__(self, out_dir: Path, say=print):
        self.path = out_dir / LOCK_FILE
        self.say = say
        self.descriptor: int | None = None

    def __enter__(self) -> "RunLock":
        while self.descriptor is None:
            try:
                descriptor, created = self.open()
            except OSError as error:
                raise UserError(f"cannot write in the run folder {self.path.parent} ({error.strerror}); "
                                "choose another --out or fix its permissions")
            try:
                self.take(descriptor)
            except BaseException:
                # A refusal, or Ctrl-C in the middle: a lock file this process made goes again.
                if created and self.descriptor is None and self.same_file(descriptor):
                    remove(self.path)
                if self.descriptor is None:
                    os.close(descriptor)
                raise
        return self

    def open(self) -> tuple[int, bool]:
        """The lock file's descriptor, and whether this process created the file."""
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
        except FileExistsError:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | NO_FOLLOW, 0o644), False

    def take(self, descriptor: int) -> None:
        """Lock the open file and write our pid in it (self.descriptor set), or return with
        self.descriptor None when the file was replaced meanwhile (the caller tries again)."""
        text = self.read_text(descriptor)
        if text.strip() and not text.strip().isdigit():
            raise UserError(f"{self.path} is not a lock minitransformer wrote (it holds other text); "
                            "move that file away, or choose another --out")
        previous = int(text) if text.strip() else None
        if not self.try_lock(descriptor, previous):
            raise UserError(
                f"another training (pid {previous}) is writing to {self.path.parent}; wait for it to "
                f"finish or stop it (kill {previous}), or train elsewhere with --out DIR"
            )
        # The holder before us may have deleted the file between our open and our lock: then
        # we locked a file nobody else sees, and must start again on the new one.
        if not self.same_file(descriptor):
            os.close(descriptor)
            return
        if previous is not None and previous != os.getpid():
            self.say(f"note: took over the lock of {self.path.parent} left by pid {previous}, which is no longer running")
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        self.descriptor = descriptor

    def same_file(self, descriptor: int) -> bool:
        """True while path names the file we hold open (not deleted, not replaced by another)."""
        try:
            ours, named = os.fstat(descriptor), os.stat(self.path)
        except OSError:
            return False
        return (ours.st_dev, ours.st_ino) == (named.st_dev, named.st_ino)

    def check_held(self) -> None:
        """Raise UserError when the run folder or its lock was deleted or replaced under us: then
        another training may own the path now, and writing on would mix two runs."""
        if self.descriptor is not None and not self.same_file(self.descriptor):
            raise UserError(f"{self.path.parent} (or its run.lock) was removed or replaced while this training "
                            "ran; stopping without writing anything more there. Train again with --out DIR")

    @staticmethod
    def read_text(descriptor: int) -> str:
        try:
            return os.pread(descriptor, 64, 0).decode()
        except (OSError, UnicodeDecodeError):
            return "?"  # unreadable: not a lock of ours

    @staticmethod
    def try_lock(descriptor: int, previous: int | None) -> bool:
        if fcntl is None:
            return previous is None or previous == os.getpid() or not process_alive(previous)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def __exit__(self, *exc) -> None:
        if self.same_file(self.descriptor):  # never delete a lock that is now another training's
            remove(self.path)  # before unlocking, so no one can lock a file that is about to go
        os.close(self.descriptor)  # closing drops the lock
        self.descriptor = None


class Made:
    """What a start makes: the run folder and its missing parents, and its data folder. A start
    refused (or failed) before its first checkpoint takes back exactly that, and nothing else.

    Folders are known by identity (device and inode), not by path: a folder someone deleted and
    another training made again at the same path is that training's, and is never removed.
    """

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.folders = [folder for folder in (out_dir, *out_dir.parents) if not folder.exists()]  # outermost last
        self.had_data = os.path.lexists(out_dir / "data")
        self.identities: dict[Path, tuple[int, int]] = {}

    def note_made(self) -> None:
        """Record the identities of the folders just made."""
        for folder in self.folders:
            self.identities[folder] = identity(folder)

    def take_back(self, lock: "RunLock") -> None:
        """Remove the data folder this start wrote, while it holds the folder's lock and the folder
        is still its own, if no checkpoint was saved (a run that saved one is a run, kept). Only a
        real folder holding nothing but the data files is removed: anything else is not ours."""
        data = self.out_dir / "data"
        if self.had_data or lock is None or os.path.lexists(self.out_dir / "last") or data.is_symlink() \
                or not data.is_dir() or any(entry.name not in DATA_FILES for entry in data.iterdir()):
            return
        try:
            lock.check_held()
        except UserError:
            return
        remove(data)

    def remove_empty_folders(self) -> None:
        """Remove the folders this start made that are still the ones it made and hold nothing."""
        for folder in self.folders:
            if folder in self.identities and identity(folder) == self.identities[folder]:
                try:
                    folder.rmdir()  # fails on a folder that holds anything
                except OSError:
                    pass


def identity(path: Path) -> tuple[int, int] | None:
    try:
        status = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def append_metrics(path: Path, row: dict) -> None:
    """Add a row at the end of metrics.jsonl, never through a symbolic link."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | NO_FOLLOW, 0o666)
    with os.fdopen(descriptor, "a") as file:
        file.write(json.dumps(row) + "\n")


def is_metrics_row(row: object) -> bool:
    """A row as evaluate_and_save writes it: a step and both losses (a diverged loss is never logged)."""
    def number(value: object) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    return isinstance(row, dict) and isinstance(row.get("step"), int) and not isinstance(row["step"], bool) \
        and row["step"] >= 0 and number(row.get("train_loss")) and number(row.get("val_loss"))


def read_metrics_rows(path: Path, say=print) -> list[dict]:
    """The rows of metrics.jsonl; a damaged row (cut short by a crash, edited, not UTF-8) is
    dropped with a warning."""
    rows, damaged = [], 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if is_metrics_row(row):
            rows.append(row)
        else:
            damaged += 1
    if damaged:
        say(f"warning: dropped {damaged} damaged line(s) from {path} (a crash while writing?)")
    return rows


def keep_metrics_until(path: Path, step: int, say=print) -> None:
    """Drop rows logged after `step` (a resumed run logs those steps again) and damaged rows."""
    if path.exists():
        rows = [row for row in read_metrics_rows(path, say) if row["step"] <= step]
        text = "".join(json.dumps(row) + "\n" for row in rows)
        write_atomically(path, lambda temp: temp.write_text(text))
