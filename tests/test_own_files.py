"""Never touch what isn't ours: the program deletes or replaces only files it wrote itself,
refuses a folder holding foreign files where it must write, checks every input before changing
any file, and a training that loses its folder or lock stops instead of writing on."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minitransformer.commands.cli import main
from minitransformer.training import setup
from minitransformer.training.run_folder import RunLock
from tests.conftest import QUICK, ROOT, TINY, error_line, train_tiny
from tests.helpers import HANG_S, wait_until


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under folder with its bytes, to prove that nothing changed."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_a_data_folder_holding_the_users_files_is_refused_and_kept(tmp_path, capsys):
    """`--out proj` where proj/data/ holds the corpus itself and notes: nothing may go."""
    project = tmp_path / "proj"
    (project / "data").mkdir(parents=True)
    corpus = project / "data" / "corpus.txt"
    corpus.write_text("To be, or not to be: that is the question.\n" * 400)
    (project / "data" / "notes.md").write_text("my notes")
    (project / "draft.tmp").write_text("a draft")
    (project / "last.old").write_text("mine too")
    before = snapshot(project)
    assert train_tiny(project, "--set", f"data.corpus={corpus}", "--set", "train.max_steps=5") == 2
    message = error_line(capsys)
    assert "did not write" in message and "corpus.txt" in message
    assert snapshot(project) == before


@pytest.mark.parametrize("foreign", [{"train.bin": b"\x00" * 64, "val.bin": b"\x00" * 64},  # nanoGPT's, say
                                     {"meta.json": b'{"vocab": 65}'}, {"meta.pkl": b"x"}])
def test_bins_or_a_meta_json_that_are_not_ours_are_refused(tmp_path, capsys, foreign):
    (tmp_path / "run" / "data").mkdir(parents=True)
    for name, content in foreign.items():
        (tmp_path / "run" / "data" / name).write_bytes(content)
    before = snapshot(tmp_path / "run")
    assert train_tiny(tmp_path / "run", "--set", "train.max_steps=5") == 2
    assert "did not write" in error_line(capsys)
    assert snapshot(tmp_path / "run") == before


def test_a_project_folder_as_the_run_folder_keeps_every_other_file(tmp_path, tiny_data):
    """`--out .` in a folder of one's own: training adds its files and changes nothing else."""
    project = tmp_path / "proj"
    (project / "src").mkdir(parents=True)
    (project / "src" / "model.py").write_text("print('mine')")
    for name in ("README.md", "x.tmp", "best.old", ".last.tmp", "metrics.jsonl.tmp", "data.tmp"):
        (project / name).write_text(name)
    before = snapshot(project)
    shutil.copytree(tiny_data, project / "data")
    assert train_tiny(project, "--set", "train.max_steps=5") == 0
    after = snapshot(project)
    assert {name: after[name] for name in before} == before
    assert {"last", "best", "metrics.jsonl", "data"} <= {path.name for path in project.iterdir()}


@pytest.mark.parametrize("name, text, said", [
    ("data", "my data", "is a file"),  # where the run keeps its tokenised data, a file of the user's
    ("run.lock", "the lock of my own tool\n", "not a lock minitransformer wrote"),
])
def test_a_file_of_the_users_where_the_run_writes_is_refused_and_kept(tmp_path, capsys, name, text, said):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / name).write_text(text)
    assert train_tiny(tmp_path / "run") == 2
    assert said in error_line(capsys)
    assert (tmp_path / "run" / name).read_text() == text


@pytest.mark.parametrize("command", ["export-gpt2", "import-gpt2"])
def test_export_and_import_never_touch_siblings(tiny_run, tmp_path, command):
    """X.old and X.tmp beside the target are the user's (here: a whole run, and a file)."""
    source = tiny_run
    if command == "import-gpt2":
        source = tmp_path / "hf"
        assert main(["export-gpt2", str(tiny_run), "--out", str(source)]) == 0
    copy_run(tiny_run, tmp_path / "out.old")
    (tmp_path / "out.tmp").write_text("mine")
    before = snapshot(tmp_path / "out.old")
    assert main([command, str(source), "--out", str(tmp_path / "out")]) == 0
    assert snapshot(tmp_path / "out.old") == before and (tmp_path / "out.tmp").read_text() == "mine"
    assert not [path for path in tmp_path.iterdir() if "mt-" in path.name]


def test_export_into_a_folder_holding_files_is_refused(tiny_run, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert main(["export-gpt2", str(tiny_run), "--out", str(tmp_path / "out")]) == 2
    assert "not empty" in error_line(capsys)
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("foreign", ["another model", "empty dict"])
def test_resuming_with_a_state_file_that_is_not_the_runs_changes_nothing(tiny_run, tmp_path, capsys, foreign):
    """A state.pt of another model (other shapes) or an empty one: one line, metrics.jsonl untouched."""
    run = copy_run(tiny_run, tmp_path / "run")
    if foreign == "another model":
        other = tmp_path / "other"
        shutil.copytree(tiny_run / "data", other / "data")
        assert train_tiny(other, "--set", "train.max_steps=5", "--set", "model.n_embd=48") == 0
        shutil.copy(other / "last" / "state.pt", run / "last" / "state.pt")
    else:
        torch.save({}, run / "last" / "state.pt")
    before = snapshot(run)
    assert main(["train", "--out", str(run), "--resume", "--set", "train.max_steps=60"]) == 2
    assert "damaged" in error_line(capsys)
    assert snapshot(run) == before


def test_the_memory_check_on_resume_comes_before_the_checkpoint_is_loaded(tiny_run, tmp_path, monkeypatch):
    """The check estimates weights and optimizer state itself: loaded first, they would count twice."""
    run = copy_run(tiny_run, tmp_path / "run")
    events = []
    real_check, real_load = setup.check_memory, setup.load_checkpoint
    monkeypatch.setattr(setup, "check_memory", lambda *a: events.append("check") or real_check(*a))
    monkeypatch.setattr(setup, "load_checkpoint", lambda *a, **k: events.append("load") or real_load(*a, **k))
    assert main(["train", "--out", str(run), "--resume", "--set", "train.max_steps=45"]) == 0
    assert events == ["check", "load"]


def start_training(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "minitransformer", "train", "--config", TINY, "--out", str(out),
         "--set", "train.max_steps=100000", "--set", "train.eval_interval=20", *QUICK, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def wait_for_rows(out: Path, process: subprocess.Popen, rows: int) -> None:
    metrics = out / "metrics.jsonl"
    wait_until(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= rows, process, 0.05)


def test_a_training_whose_folder_is_deleted_stops_and_never_writes_into_the_next_run(tmp_path):
    out = tmp_path / "run"
    first = start_training(out)
    try:
        wait_for_rows(out, first, 2)
        out.rename(tmp_path / "deleted")  # as `rm -rf` does, at once (rmtree here would race the writes)
        shutil.rmtree(tmp_path / "deleted", ignore_errors=True)
        # A new training into the same path at once; the first must stop rather than write on.
        assert train_tiny(out, "--set", "train.max_steps=40", "--set", "train.eval_interval=20") == 0
        second = snapshot(out)
        _, stderr = first.communicate(timeout=HANG_S)
    finally:
        first.kill()
    assert first.returncode == 2, stderr
    assert "removed or replaced" in stderr and stderr.count("\n") == 1 and "Traceback" not in stderr
    assert snapshot(out) == second
    rows = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows == [0, 20, 40]


def test_a_lock_replaced_under_a_training_is_not_deleted_at_its_end(tmp_path):
    (tmp_path / "run").mkdir()
    with RunLock(tmp_path / "run") as lock:
        (tmp_path / "run" / "run.lock").unlink()
        (tmp_path / "run" / "run.lock").write_text(f"{os.getppid()}\n")  # another training's, now
        with pytest.raises(ValueError, match="removed or replaced"):
            lock.check_held()
    assert (tmp_path / "run" / "run.lock").read_text() == f"{os.getppid()}\n"


def test_replacing_a_folder_never_replaces_a_file_in_its_place(tmp_path):
    from minitransformer.machine.files import write_folder_atomically

    (tmp_path / "last").write_text("mine")
    with pytest.raises(FileExistsError):
        write_folder_atomically(tmp_path / "last", lambda folder: (folder / "x").write_text("new"))
    assert (tmp_path / "last").read_text() == "mine" and [p.name for p in tmp_path.iterdir()] == ["last"]


def test_an_old_copy_named_like_ours_survives_an_export(tiny_run, tmp_path):
    """`.myexp.1.keep.mt-old` beside an export target: pid 1 runs, and no name decides a deletion."""
    (tmp_path / "V").mkdir()
    keep = tmp_path / "V" / ".myexp.1.keep.mt-old"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    assert main(["export-gpt2", str(tiny_run), "--out", str(tmp_path / "V" / "myexp")]) == 0
    assert (tmp_path / "V" / "myexp" / "model.safetensors").is_file()
    assert main(["import-gpt2", str(tmp_path / "V" / "myexp"), "--out", str(tmp_path / "V" / "back")]) == 0
    assert (keep / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("where", ["last/notes.txt", "best/eval.txt", "best/hf/config.json"])
def test_a_checkpoint_folder_holding_the_users_files_is_refused_before_training(tiny_run, tmp_path, capsys, where):
    """Every save replaces last/ (and best/) whole: a file of the user's there is refused in one line
    before anything is written, and stays."""
    run = copy_run(tiny_run, tmp_path / "run")
    mine = run / where
    mine.parent.mkdir(parents=True, exist_ok=True)
    mine.write_text("mine")
    before = snapshot(run)
    assert main(["train", "--out", str(run), "--resume", "--set", "train.max_steps=60"]) == 2
    err = error_line(capsys)
    assert where.split("/")[1] in err and "did not write" in err and "move" in err
    assert snapshot(run) == before


@pytest.mark.parametrize("name", ["run.lock", "metrics.jsonl", "last", "best", "data", "last/state.pt"])
def test_a_symbolic_link_in_the_run_folder_is_refused_and_never_written_through(tiny_run, tmp_path, capsys, name):
    run = copy_run(tiny_run, tmp_path / "run")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = run / name
    if target.is_dir():  # a folder of the user's elsewhere, linked in its place
        shutil.move(target, tmp_path / "elsewhere")
        target.symlink_to(tmp_path / "elsewhere")
    else:
        if target.exists():
            shutil.move(target, tmp_path / "elsewhere")
        target.symlink_to(victim if name != "metrics.jsonl" else tmp_path / "outside.txt")  # dangling for metrics
    outside = snapshot(tmp_path / "elsewhere") if (tmp_path / "elsewhere").is_dir() else None
    assert main(["train", "--out", str(run), "--resume", "--set", "train.max_steps=60"]) == 2
    err = error_line(capsys)
    assert name.split("/")[-1] in err and ("symbolic link" in err or "did not write" in err)
    assert victim.read_text() == "precious" and not (tmp_path / "outside.txt").exists()
    assert outside is None or snapshot(tmp_path / "elsewhere") == outside


def test_metrics_are_never_appended_through_a_link_made_while_training(tmp_path):
    from minitransformer.training.run_folder import append_metrics

    (tmp_path / "metrics.jsonl").symlink_to(tmp_path / "outside.txt")
    with pytest.raises(OSError):
        append_metrics(tmp_path / "metrics.jsonl", {"step": 0})
    assert not (tmp_path / "outside.txt").exists()


def test_written_files_keep_their_mode_or_get_the_umasks(run_dir):
    """mkstemp makes 0600 files: a rewritten file keeps its mode, a new one gets 0666 less the umask."""
    from minitransformer.machine.files import write_atomically, write_folder_atomically

    old_mask = os.umask(0o022)
    try:
        existing = run_dir / "page.txt"
        existing.write_text("x")
        existing.chmod(0o644)
        write_atomically(existing, lambda temp: temp.write_text("y"))
        assert existing.stat().st_mode & 0o777 == 0o644
        existing.chmod(0o640)
        write_atomically(existing, lambda temp: temp.write_text("z"))
        assert existing.stat().st_mode & 0o777 == 0o640
        write_atomically(run_dir / "new.txt", lambda temp: temp.write_text("n"))
        assert (run_dir / "new.txt").stat().st_mode & 0o777 == 0o644
        write_folder_atomically(run_dir / "folder", lambda temp: (temp / "f").write_text("f"))
        assert (run_dir / "folder").stat().st_mode & 0o777 == 0o755
        assert train_tiny(run_dir, "--set", "train.max_steps=2") == 0
        assert (run_dir / "last").stat().st_mode & 0o777 == 0o755
        assert (run_dir / "last" / "model.safetensors").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old_mask)


def test_a_read_only_file_is_replaced_and_keeps_its_mode(run_dir):
    """The temporary gets the file's mode once written: while being written it is writable (a 0444
    temporary would refuse the write for anyone but root)."""
    from minitransformer.machine.files import write_atomically

    page = run_dir / "page.txt"
    page.write_text("old")
    page.chmod(0o444)
    modes = []

    def write(temp: Path) -> None:
        modes.append(temp.stat().st_mode & 0o777)
        temp.write_text("new")

    write_atomically(page, write)
    assert page.read_text() == "new" and page.stat().st_mode & 0o777 == 0o444
    assert modes[0] & 0o200  # writable while written


def test_an_error_while_writing_names_the_users_file_not_our_temporary(run_dir):
    from minitransformer.machine.files import write_atomically, write_folder_atomically

    def fail(temp: Path) -> None:
        raise OSError(28, "No space left on device", str(temp))

    before = sorted(run_dir.iterdir())
    for writer, path in ((write_atomically, run_dir / "page.txt"), (write_folder_atomically, run_dir / "last")):
        with pytest.raises(OSError) as raised:
            writer(path, fail)
        assert raised.value.filename == str(path) and "mt-tmp" not in str(raised.value)
    assert sorted(run_dir.iterdir()) == before  # no temporary left behind


def test_writing_never_sets_the_process_umask(run_dir, monkeypatch):
    """os.umask changes it for every thread at once (a notebook's others would create files with
    none): the mode is computed from the umask read, never set."""
    from minitransformer.machine import files

    def forbidden(mask):
        raise AssertionError("os.umask was called")

    monkeypatch.setattr(os, "umask", forbidden)
    files.write_atomically(run_dir / "new.txt", lambda temp: temp.write_text("n"))
    files.write_folder_atomically(run_dir / "folder", lambda temp: (temp / "f").write_text("f"))
    files.write_folder_atomically(run_dir / "folder", lambda temp: (temp / "g").write_text("g"))
    assert (run_dir / "folder" / "g").exists() and not (run_dir / "folder" / "f").exists()
    monkeypatch.undo()
    mask = os.umask(0o027)
    try:
        assert files.current_umask() == 0o027
        files.write_atomically(run_dir / "private.txt", lambda temp: temp.write_text("p"))
        assert (run_dir / "private.txt").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(mask)


@pytest.mark.parametrize("swaps", [True, False], ids=["exchange", "two renames"])
def test_a_crash_while_a_folder_is_replaced_leaves_a_whole_copy_under_a_name_we_find(run_dir, monkeypatch, swaps):
    """Killed right after the swap (exchange) or between the two renames (where the system cannot
    swap): the folder's own name holds the new copy, or the old one is where previous_copies looks."""
    from minitransformer.machine import files

    folder = run_dir / "last"
    files.write_folder_atomically(folder, lambda temp: (temp / "weights").write_text("old"))
    if not swaps:
        monkeypatch.setattr(files, "exchange", lambda first, second: False)
    real_replace = os.replace
    crashes = []

    def crash_after_the_first(source, target):
        real_replace(source, target)
        if not crashes:
            crashes.append(target)
            raise KeyboardInterrupt  # the process dies here

    def crash_after_the_swap(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash_after_the_first)
    monkeypatch.setattr(files, "remove", crash_after_the_swap if swaps else files.remove)
    if swaps and files.renameat2() is None:
        pytest.skip("this system has no renameat2")
    with pytest.raises(KeyboardInterrupt):
        files.write_folder_atomically(folder, lambda temp: (temp / "weights").write_text("new"))
    if swaps:
        assert (folder / "weights").read_text() == "new"
    else:
        assert not folder.exists()
        assert [(copy / "weights").read_text() for copy in files.previous_copies(folder)] == ["old"]


def test_a_refused_start_keeps_a_data_folder_holding_anything_else(tmp_path, monkeypatch):
    """Made.take_back removes only a data/ holding our three files, nothing it did not write."""
    from minitransformer.training.run_folder import Made, RunLock

    out = tmp_path / "run"
    made = Made(out)
    out.mkdir()
    made.note_made()
    (out / "data").mkdir()
    (out / "data" / "notes.txt").write_text("mine")
    with RunLock(out) as lock:
        made.take_back(lock)
    assert (out / "data" / "notes.txt").read_text() == "mine"
    (out / "data" / "notes.txt").unlink()
    (out / "data" / "meta.json").write_text("{}")
    with RunLock(out) as lock:
        made.take_back(lock)
    assert not (out / "data").exists()
