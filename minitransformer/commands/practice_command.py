"""The `practice` command: list the exercises and progress, write stubs, check, hint, solution, run.

    minitransformer practice                      the exercises and which pass in ./practice
    minitransformer practice start [DIR]          one stub file per exercise (never overwrites)
    minitransformer practice check [NAME ...]     exit 0 only when every one checked passes
    minitransformer practice hint NAME            the next hint
    minitransformer practice solution NAME        our code
    minitransformer practice run                  your pieces inside the shipped trained model
"""

import inspect
from pathlib import Path

from ..errors import UserError
from ..practice.checker import Report, check, exercise
from ..practice.exercises import EXERCISES
from ..practice.workspace import HerCodeFailed, NotLoadable, PIECES, SHIPPED_MODEL, compare, load, next_hint, start, use

DEFAULT_DIR = "practice"


def check_one(folder: Path, name: str) -> Report:
    """Her file's function for exercise name, checked; a missing or broken file is a failed report."""
    try:
        fn = load(folder, name)
    except NotLoadable as error:
        return Report(name, False, None, "runs", f"{folder / (name + '.py')} cannot be imported:\n{error}")
    if fn is None:
        return Report(name, False, None, "not started", f"no {folder / (name + '.py')}: run "
                      f"`minitransformer practice start {folder}` to write the stubs")
    return check(name, fn)


def list_exercises(folder: Path) -> int:
    print(f"exercises (your files in {folder}/):")
    passed = 0
    for name in EXERCISES:
        report = check_one(folder, name) if folder.is_dir() else None
        state = "-" if report is None else "passed" if report.passed else report.failed
        passed += bool(report and report.passed)
        print(f"  {name:22} {state}")
    print(f"{passed} of {len(EXERCISES)} passed" + ("" if folder.is_dir() else
          f"; start with: minitransformer practice start {folder}"))
    return 0


def practice(action: str | None, names: list[str], folder: str, folder_given: bool = False) -> int:
    if folder == "":
        raise UserError("--dir '' names no folder; give your exercise folder, e.g. --dir practice")
    folder_path = Path(folder)
    if action is None:
        if names:
            raise UserError(f"practice takes an action before names: start, check, hint, solution or run "
                            f"(got {' '.join(names)})")
        return list_exercises(folder_path)
    if action == "start":
        if len(names) > 1 or names and folder_given:
            raise UserError("practice start takes one folder: `practice start DIR` or `practice start --dir DIR`")
        target = Path(names[0]) if names else folder_path
        written, kept = start(target)
        print(f"wrote {len(written)} stub(s) into {target}/" + (f"; kept {len(kept)} file(s) you have" if kept else ""))
        print(f"write a body, then: minitransformer practice check NAME --dir {target}")
        return 0
    if action == "check":
        for name in names:
            exercise(name)  # an unknown name is one line, before any checking
        reports = [check_one(folder_path, name) for name in dict.fromkeys(names or EXERCISES)]
        for report in reports:
            print(report)
        failed = sum(not report.passed for report in reports)
        print(f"{len(reports) - failed} of {len(reports)} passed")
        return 0 if failed == 0 else 1
    if action == "run":
        if names:
            raise UserError(f"practice run takes no names (it runs every piece you have written in {folder}); "
                            f"got {' '.join(names)}; use --dir DIR for another folder")
        return run(folder_path)
    if len(names) != 1:
        raise UserError(f"practice {action} takes one exercise name, e.g. practice {action} attention")
    if action == "hint":
        return hint(folder_path, names[0])
    if action == "solution":
        ex = exercise(names[0])
        print(f"# ours, from {inspect.getsourcefile(ex.solution)}\n{inspect.getsource(ex.solution)}")
        return 0
    raise UserError(f"unknown practice action {action!r}; use start, check, hint, solution or run")


def hint(folder: Path, name: str) -> int:
    """The next hint; the first is the one for what fails in her file now."""
    exercise(name)
    try:
        fn = load(folder, name) if folder.is_dir() else None
    except NotLoadable:
        fn = None  # `practice check` shows why; a hint still helps
    number, count, text, note = next_hint(folder, name, fn)
    if note:
        print(note)
    print(f"{name}, hint {number} of {count}: {text}")
    return 0


def written_pieces(folder: Path) -> dict:
    """Her functions that can stand in for ours in the model, those she has written (not stubs).
    A file that cannot be imported, or a piece that does not run, is refused with her traceback."""
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder of exercises; write one with: minitransformer practice start {folder}")
    pieces = {}
    for name in PIECES:
        report = check_one(folder, name)
        if report.failed in ("not started", "not written yet"):
            continue
        if report.failed in ("runs", "leaves the session alone"):
            raise HerCodeFailed(f"your {name} ({folder / (name + '.py')}) does not run:\n{report.details}\n"
                            f"fix it, then: minitransformer practice check {name} --dir {folder}")
        pieces[name] = load(folder, name)
    print(f"your pieces: {', '.join(pieces) or 'none written yet (ours only)'}")
    return pieces


def run(folder: Path) -> int:
    """Her written pieces inside the shipped model, beside ours: exit 0 only when loss, text and
    every activation agree."""
    try:
        pieces = written_pieces(folder)
    except HerCodeFailed as error:
        print(f"FAILED: {error}")
        return 1
    print(f"the shipped model: the default config's, trained by `minitransformer train` ({SHIPPED_MODEL / 'TRAINING.md'} "
          "says how)")
    try:
        with use(**pieces):
            result = compare()
    except HerCodeFailed as error:
        print(f"FAILED: {error}")
        return 1
    print(str(result).split("\n", 1)[1])
    return 0 if result.passed or not pieces else 1
