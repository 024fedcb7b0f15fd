"""`check(name, fn)`: run a learner's function against ours and say, in plain words, what is wrong.

One property at a time, in this order, and the first that fails is named: it runs (a stub says
"not written yet"; anything it raises, SystemExit included, shows the learner's own traceback,
never ours), it leaves the session alone (no torch function replaced, no default dtype changed),
the outputs' types against the contract (a tuple, a list of ints, a dense tensor on the inputs'
device), their shapes and dtypes, the inputs left unchanged (tensors, lists and the weights of
the modules she is given), rows that sum to 1, causality (a future key or value changes no
earlier output), then the values of every case against ours computed live in float64.

Design choices:
- Her code runs apart from ours (isolation.py): every call sees torch's own functions and
  defaults, whatever her file or session replaced, and her session is given back exactly as it
  was, random state and print options included. Ours computes with every piece ours
  (pieces.ours_only), so practice.use never reaches a reference.
- Values pass when |yours - ours| <= 1e-5 * max(1, largest |ours|) + 1e-4 * |ours| entry by
  entry (float32's rounding, with room; docs/practice.md states it), NaN against NaN; integers,
  booleans and lists exactly.
- When the values are wrong, the exercise's catalogue of known mistakes (mistakes.py) runs on the
  same inputs: one that gives exactly her outputs on every case is named, with the line to look
  at; else two at once, where the catalogue can combine them.
- What she sees is in her terms: lists as lists, masks as True/False, the failing case's call
  with its inputs when they are small.
"""

import copy
import html
import inspect
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import pieces
from ..errors import UserError
from .exercises import EXERCISES, Exercise
from .isolation import checking, original, replaced_functions, run_hers

OURS = Path(__file__).parent.parent  # frames from here are ours, not the learner's
SHOWN_ENTRIES = 16  # a tensor this small is shown whole beside ours
RTOL, ATOL = 1e-4, 1e-5  # the tolerances (see the module's docstring)


@dataclass(frozen=True)
class Report:
    """What `check` found: passed, the mistake recognised (a short id, two joined by " + " when
    two are made at once, or None; `mistakes` has them one by one), the property that failed, and
    the explanation (`str(report)`; in Jupyter, `_repr_html_`)."""

    name: str
    passed: bool
    mistake: str | None = None
    failed: str | None = None  # "not written yet", "runs", "type", "shape", "dtype", "inputs unchanged", ...
    details: str = ""
    mistakes: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.passed:
            return f"{self.name}: passed ({self.details})"
        return f"{self.name}: FAILED ({self.failed})\n" + "\n".join("  " + line for line in self.details.splitlines())

    def __repr__(self) -> str:  # a notebook's plain-text view shows the words too
        return str(self)

    def _repr_html_(self) -> str:
        colour = "#1a7f37" if self.passed else "#cf222e"
        head, _, rest = str(self).partition("\n")
        return (f'<div style="border-left: 4px solid {colour}; padding-left: 8px"><b style="color: {colour}">'
                f"{html.escape(head)}</b><pre>{html.escape(rest)}</pre></div>")


class Failed(Exception):
    """A property failed: what, and the words for it."""

    def __init__(self, failed: str, details: str, recognise: bool = True):
        super().__init__(details)
        self.failed, self.details, self.recognise = failed, details, recognise


def exercise(name: str) -> Exercise:
    if not isinstance(name, str) or name not in EXERCISES:
        raise UserError(f"no exercise named {name!r}; the exercises are: {', '.join(EXERCISES)}")
    return EXERCISES[name]


# ---------------------------------------------------------------- showing values in her terms
def show(value, limit: int = SHOWN_ENTRIES) -> str:
    """A value as she would write it: lists as lists, masks as True/False, numbers to 4 figures;
    a tensor larger than limit as its shape and dtype."""
    if torch.is_tensor(value):
        if value.layout != torch.strided or value.device.type == "meta" or value.numel() > limit:
            return f"tensor of shape {tuple(value.shape)}, {value.dtype}"
        return show(value.detach().cpu().tolist(), limit)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(show(item, limit) for item in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})"
    if callable(value) and not isinstance(value, type):
        return type(value).__name__ if isinstance(value, torch.nn.Module) else getattr(value, "__name__", "a function")
    return repr(value)


def call_text(ex: Exercise, args: tuple) -> str:
    """The case as a call, e.g. merge_pair([1, 2, 3], (1, 2), 7), with large tensors by their shape."""
    return f"{ex.name}({', '.join(show(arg) for arg in args)})"


def type_words(value) -> str:
    if torch.is_tensor(value):
        return f"a tensor ({value.dtype})"
    if isinstance(value, (list, tuple)):
        kinds = sorted({type(item).__name__ for item in value})
        return f"a {type(value).__name__} of {len(value)}" + (f" ({', '.join(kinds)})" if kinds else "")
    return "None" if value is None else f"a {type(value).__name__}"


# ---------------------------------------------------------------- comparing
def close(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Entry by entry: within the tolerances (NaN equal to NaN, inf to inf)."""
    a, b = a.detach().double(), b.detach().double()
    finite = b[torch.isfinite(b)]
    scale = max(1.0, float(finite.abs().max())) if finite.numel() else 1.0
    return torch.isclose(a, b, rtol=RTOL, atol=ATOL * scale, equal_nan=True)


def same(a, b) -> bool:
    """Outputs equal: tensors within the tolerances (integers and booleans exactly), lists and
    tuples item by item, anything else by ==."""
    if isinstance(b, (list, tuple)):
        return isinstance(a, type(b)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if torch.is_tensor(b):
        if not plain_tensor(a) or a.shape != b.shape or a.device != b.device:
            return False
        if not a.is_floating_point() or not b.is_floating_point():  # booleans and integers: exactly
            return a.dtype == b.dtype and torch.equal(a, b)
        return bool(close(a, b).all())
    return type(a) is type(b) and a == b


def identical(a, b) -> bool:
    """Equal and of the same dtypes: what naming a catalogued mistake takes."""
    if isinstance(b, (list, tuple)):
        return isinstance(a, type(b)) and len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b))
    return same(a, b) and (not torch.is_tensor(b) or a.dtype == b.dtype)


def plain_tensor(value) -> bool:
    return torch.is_tensor(value) and type(value) in (torch.Tensor, torch.nn.Parameter) \
        and value.layout == torch.strided and value.device.type != "meta"


def first_difference(given, ours) -> str:
    """Where given and ours part: the first entry (row-major) for tensors, both whole when small."""
    if not torch.is_tensor(ours):
        return f"yours {show(given, 10**6)}\nours  {show(ours, 10**6)}"
    if ours.dtype == torch.bool or not ours.is_floating_point():
        wrong = given.long() != ours.long()
    else:
        wrong = ~close(given, ours)
    where = int(wrong.flatten().nonzero()[0]) if wrong.any() else 0
    index = [int(i) for i in torch.unravel_index(torch.tensor(where), tuple(ours.shape))] if ours.dim() else []
    line = f"first difference at {index}: yours {show(given.flatten()[where].item())}, ours {show(ours.flatten()[where].item())}"
    if ours.numel() <= SHOWN_ENTRIES:
        line += f"\nyours: {show(given)}\nours:  {show(ours)}"
    return line


def leaves(value, where: str = "the output") -> list[tuple[str, object]]:
    """(name, value) for each output: output 0, output 1 of a tuple; the value itself otherwise."""
    if isinstance(value, tuple):
        return [(f"output {i}", item) for i, item in enumerate(value)]
    return [(where, value)]


def contract_problem(mine, ours, what: str = "the output") -> tuple[str, str] | None:
    """How her output's type breaks the contract that ours sets: (property, words), or None."""
    if isinstance(ours, tuple):
        if not isinstance(mine, tuple):
            return "type", f"{what} is {type_words(mine)}; the contract is a tuple of {len(ours)} " \
                           f"({', '.join(type_words(item) for item in ours)})"
        if len(mine) != len(ours):
            return "outputs", f"returns a tuple of {len(mine)}; ours returns {len(ours)}"
        for i, (a, b) in enumerate(zip(mine, ours)):
            problem = contract_problem(a, b, f"output {i}")
            if problem:
                return problem
        return None
    if isinstance(ours, list):
        if not isinstance(mine, list):
            return "type", f"{what} is {type_words(mine)}; the contract is a list of Python ints"
        for i, item in enumerate(mine):
            if type(item) is not int:
                return "type", f"{what}[{i}] is {type_words(item)}; the contract is a list of Python ints " \
                               "(int(...) or .tolist() makes them)"
        return None
    if torch.is_tensor(ours):
        if not torch.is_tensor(mine):
            return "type", f"{what} is {type_words(mine)}; the contract is a tensor"
        if type(mine) not in (torch.Tensor, torch.nn.Parameter):
            return "type", f"{what} is a {type(mine).__name__} (a subclass of Tensor); return a plain tensor"
        if mine.layout != torch.strided:
            return "type", f"{what} is a {str(mine.layout).replace('torch.', '')} tensor; the contract is a dense one " \
                           "(.to_dense())"
        if mine.device != ours.device:
            return "device", f"{what} is on the {mine.device} device; ours is on {ours.device}, where the inputs are"
        if mine.shape != ours.shape:
            return "shape", f"{what} has shape {tuple(mine.shape)}; ours {tuple(ours.shape)}"
        if mine.dtype != ours.dtype:
            return "dtype", f"{what} is {mine.dtype}; ours {ours.dtype}"
        return None
    if type(mine) is not type(ours):
        return "type", f"{what} is {type_words(mine)}; ours is {type_words(ours)}"
    return None


def changed_input(before, after) -> str | None:
    """How her function changed an input in place: None, or the words."""
    if torch.is_tensor(before):
        unchanged = torch.is_tensor(after) and after.shape == before.shape and after.dtype == before.dtype and \
            bool(((after == before) | (after.isnan() & before.isnan()) if before.is_floating_point() else
                  (after == before)).all())
        return None if unchanged else "its values"
    if isinstance(before, torch.nn.Module):
        now = dict(after.state_dict()) if isinstance(after, torch.nn.Module) else {}
        for name, tensor in before.state_dict().items():
            if name not in now or changed_input(tensor, now[name]):
                return f"its weights ({name})"
        return None
    if isinstance(before, (list, tuple)):
        if not isinstance(after, type(before)) or len(after) != len(before):
            return "its items"
        changes = [changed_input(item, now) for item, now in zip(before, after)]  # a list of tensors: each its own
        return None if not any(changes) else "its items"
    if isinstance(before, dict):
        return None if before.keys() == after.keys() and not any(changed_input(before[key], after[key])
                                                                   for key in before) else "its items"
    return None


# ---------------------------------------------------------------- running hers and ours
def learner_traceback(error: BaseException) -> str:
    """The traceback of an exception raised in the learner's code, without our frames."""
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if not Path(frame.filename).is_relative_to(OURS)]
    lines = traceback.format_list(frames) + traceback.format_exception_only(type(error), error)
    if isinstance(error, SystemExit):
        lines.append(f"(sys.exit() or exit() was called, with {error.code!r}: a function returns its result instead)\n")
    if isinstance(error, KeyboardInterrupt):
        lines.append("(KeyboardInterrupt was raised by your code itself, not by Ctrl-C)\n")
    return "".join(lines).rstrip()


class Hers:
    """Calls her function on copies of a case's inputs and remembers what it did."""

    def __init__(self, ex: Exercise, fn):
        self.ex, self.fn, self.notes = ex, fn, []

    def call(self, label: str, args: tuple):
        """Her output for a case (copies of the inputs), checking it ran and left inputs and session alone."""
        inputs = copy.deepcopy(args)
        outcome = run_hers(self.fn, *inputs)
        if outcome.raised is not None:
            error = outcome.raised.error
            if isinstance(error, NotImplementedError):
                raise Failed("not written yet", "the function still raises NotImplementedError: write its body "
                             f"(`minitransformer practice hint {self.ex.name}` gives a hint)", recognise=False)
            raise Failed("runs", f'case "{label}": {call_text(self.ex, args)} raised an exception in your code:\n'
                         + learner_traceback(error), recognise=False)
        if outcome.serious:
            raise Failed("leaves the session alone", f'case "{label}": your function {"; ".join(outcome.serious)}. '
                         "That would change what ours, and all your later work, computes: it was put back; "
                         "compute your result without it", recognise=False)
        for note in outcome.harmless:
            if note not in self.notes:
                self.notes.append(note)
        return outcome.value, inputs


def ours(ex: Exercise, args: tuple, exact: bool):
    """Ours on a copy of the inputs: in their own precision, or (exact) floating tensors in float64.
    Modules (the MLP's layers, a block's parts) keep their float32 weights: such cases stay float32."""
    args = copy.deepcopy(args)
    modules = any(isinstance(arg, torch.nn.Module) for arg in args)
    if exact and not modules:
        args = tuple(arg.double() if torch.is_tensor(arg) and arg.is_floating_point() else arg for arg in args)
    return ex.reference(*args)


def canonical(value, key):
    """A case's outputs as compared: key (e.g. sorting a row whose tied entries may come in any
    order) applied to every tensor."""
    if key is None:
        return value
    if isinstance(value, tuple):
        return tuple(canonical(item, key) for item in value)
    return key(value) if plain_tensor(value) else value


def recognise(ex: Exercise, cases: list, given: list) -> tuple[tuple[str, ...], str] | None:
    """The catalogued mistake (or two at once) whose outputs equal hers on every case: (ids, words)."""
    for names in ex.suspects():
        try:
            theirs = [canonical(ex.wrong(names, copy.deepcopy(case.args)), case.key) for case in cases]
        except Exception:  # a variant that cannot run on some input cannot be what the learner wrote
            continue
        if all(identical(canonical(mine, case.key), other) for mine, other, case in zip(given, theirs, cases)):
            says = " and that ".join(ex.mistakes[name].says for name in names)
            look = "\n".join(f"look at: {ex.mistakes[name].look_at}" for name in names)
            both = "two mistakes at once: " if len(names) > 1 else ""
            return names, f"{both}your {ex.name} behaves exactly like one that {says}\n{look}"
    return None


def verdict(ex: Exercise, fn) -> tuple[list, list[str]]:
    """Every property in order; raises Failed at the first that fails. Returns her outputs and notes."""
    hers = Hers(ex, fn)
    cases = ex.cases()
    given = [hers.call(case.label, case.args) for case in cases]
    names = list(inspect.signature(ex.reference).parameters)
    outputs = [value for value, _ in given]
    try:
        for case, (value, inputs) in zip(cases, given):
            plain = ours(ex, case.args, exact=False)
            problem = contract_problem(value, plain)
            if problem:
                raise Failed(problem[0], f'case "{case.label}": {problem[1]}\n{call_text(ex, case.args)}')
            for position, (before, after) in enumerate(zip(case.args, inputs)):
                what = changed_input(before, after)
                if what:
                    raise Failed("inputs unchanged", f'case "{case.label}": your function changed {what} of its input '
                                 f"`{names[position]}` in place; compute new values instead", recognise=False)
        first = cases[0]
        for index in ex.rows_sum_to_one:  # the first case sums over the last axis
            probabilities = leaves(outputs[0])[index][1].double()
            sums = probabilities.sum(-1)
            if not bool(torch.isclose(sums, torch.ones_like(sums), atol=1e-4).all()):
                raise Failed("rows sum to 1", f'case "{first.label}": rows of output {index} sum to '
                             f"{show(sums.flatten()[:4].tolist())}..., not 1")
        if ex.causal:
            leak = causality_broken(hers, first)
            if leak:
                raise Failed("causality", leak)
        for case, value in zip(cases, outputs):
            exact = ours(ex, case.args, exact=True)
            for (what, mine), (_, reference) in zip(leaves(canonical(value, case.key)), leaves(canonical(exact, case.key))):
                if not same(mine, reference):
                    raise Failed(f"values: {case.label}", f'case "{case.label}": {what} differs from ours\n'
                                 f"{call_text(ex, case.args)}\n" + first_difference(mine, reference))
    except Failed as failed:
        failed.given = outputs
        raise
    return outputs, hers.notes


def causality_broken(hers: Hers, case) -> str | None:
    """Attention: change the last key and value; no earlier query's output may change."""
    q, k, v, mask = case.args
    before = leaves(hers.call(case.label, case.args)[0])[0][1]
    k2, v2 = k.clone(), v.clone()
    k2[..., -1, :] += 3.0
    v2[..., -1, :] += 3.0
    after = leaves(hers.call(case.label, (q, k2, v2, mask))[0])[0][1]
    if not same(after[..., :-1, :], before[..., :-1, :]):
        return ("changing the last key and value changed the outputs of earlier queries: the future leaks in\n"
                + first_difference(after[..., :-1, :], before[..., :-1, :]))
    return None


def check(name: str, fn) -> Report:
    """Check the learner's function `fn` for exercise `name`; returns a Report (see the module's doc)."""
    ex = exercise(name)
    if not callable(fn):
        return Report(name, False, None, "runs", f"got {type_words(fn)}, not a function: pass the function itself, "
                      f"e.g. practice.check({name!r}, {name})")
    original()
    with checking() as session, pieces.ours_only():
        before = [f"{name} was not torch's own in this session (replaced before the check); yours and ours were "
                  "checked with torch's own" for name in replaced_functions(session)][:3]
        try:
            outputs, notes = verdict(ex, fn)
        except Failed as failed:
            named = recognise(ex, ex.cases(), failed.given) if failed.recognise and hasattr(failed, "given") else None
            words = failed.details + "".join(f"\nnote: {line}" for line in before)
            if named:
                return Report(name, False, " + ".join(named[0]), failed.failed, named[1] + "\n" + words, named[0])
            return Report(name, False, None, failed.failed, words)
    extra = "".join(f"; note: your function {note} (put back after each call)" for note in notes)
    extra += "".join(f"; note: {line}" for line in before)
    return Report(name, True, None, None, f"{len(outputs)} cases agree with ours{extra}")
