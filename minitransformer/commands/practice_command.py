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
from ..practice.checker import Report, check, exercise, learner_traceback
from ..practice.exercises import EXERCISES
from ..practice.workspace import NotLoadable, PIECES, SHIPPED_MODEL, load, next_hint, run_shipped, start

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


def practice(action: str | None, names: list[str], folder: str) -> int:
    folder_path = Path(folder)
    if action is None:
        return list_exercises(folder_path)
    if action == "start":
        target = Path(names[0]) if names else folder_path
        written, kept = start(target)
        print(f"wrote {len(written)} stub(s) into {target}/" + (f"; kept {len(kept)} file(s) you have" if kept else ""))
        print(f"write a body, then: minitransformer practice check NAME --dir {target}")
        return 0
    if action == "check":
        for name in names:
            exercise(name)  # an unknown name is one line, before any checking
        reports = [check_one(folder_path, name) for name in names or EXERCISES]
        for report in reports:
            print(report)
        failed = sum(not report.passed for report in reports)
        print(f"{len(reports) - failed} of {len(reports)} passed")
        return 0 if failed == 0 else 1
    if len(names) != 1 and action in ("hint", "solution"):
        raise UserError(f"practice {action} takes one exercise name, e.g. practice {action} attention")
    if action == "hint":
        number, count, text = next_hint(folder_path, names[0])
        print(f"{names[0]}, hint {number} of {count}: {text}")
        return 0
    if action == "solution":
        ex = exercise(names[0])
        print(f"# ours, from {inspect.getsourcefile(ex.solution)}\n{inspect.getsource(ex.solution)}")
        return 0
    if action == "run":
        return run(folder_path)
    raise UserError(f"unknown practice action {action!r}; use start, check, hint, solution or run")


def written_pieces(folder: Path) -> dict:
    """Her functions that can stand in for ours in the model, those she has written (not stubs)."""
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder of exercises; write one with: minitransformer practice start {folder}")
    pieces = {}
    for name in PIECES:
        report = check_one(folder, name)
        if report.failed in ("not started", "not written yet"):
            continue
        if report.failed == "runs" and "cannot be imported" in report.details:
            raise UserError(f"{folder / (name + '.py')} cannot be imported; run: minitransformer practice check {name} "
                            f"--dir {folder}")
        pieces[name] = load(folder, name)
    print(f"your pieces: {', '.join(pieces) or 'none written yet (ours only)'}")
    return pieces


def run(folder: Path) -> int:
    """Her written pieces inside the shipped model, beside ours."""
    pieces = written_pieces(folder)
    print(f"the shipped model: the default config's, trained by `minitransformer train` ({SHIPPED_MODEL / 'TRAINING.md'} "
          "says how)")
    try:
        result = run_shipped(pieces)
    except UserError:
        raise
    except Exception as error:  # raised in her code: show her traceback, not ours
        print(f"your pieces raised an exception inside the model:\n{learner_traceback(error)}")
        return 1
    for who in ("ours", "hers"):
        loss, text = result[who]
        label = "ours" if who == "ours" else "yours"
        print(f"\n{label:5} val loss {loss:.4f}; greedy text:\n{text}")
    if result["parting"] is not None:
        same_text = "the same greedy text" if result["ours"][1] == result["hers"][1] else "another greedy text"
        print(f"\n{same_text}; the activations part first at {result['parting']} (the names: minitransformer/taps.py)")
        return 1
    if pieces:
        print("\nevery activation agrees with ours: the same loss and the same text")
    return 0
