"""`check(name, fn)`: run a learner's function against ours and say, in plain words, what is wrong.

One property at a time, in this order, and the first that fails is named: it runs (a stub says
"not written yet"; an exception shows the learner's own traceback, never ours), the outputs'
shapes and dtypes, the inputs left unchanged, rows that sum to 1, causality (a future key or
value changes no earlier output), then the values of every case (small first, then the awkward
ones: overflow, small variance, one query, a cache offset) against ours computed live in
float64, with the first differing entry shown beside ours. When the values are wrong, the
exercise's catalogue of known mistakes runs on the same inputs; one that gives exactly the
learner's outputs on every case is named, with the line to look at.
"""

import copy
import html
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UserError
from .exercises import EXERCISES, Exercise

OURS = Path(__file__).parent.parent  # frames from here are ours, not the learner's
SHOWN_ENTRIES = 16  # a tensor this small is shown whole beside ours


@dataclass(frozen=True)
class Report:
    """What `check` found: passed, the mistake recognised (a short id, or None), the property that
    failed, and the explanation (`str(report)`; in Jupyter, `_repr_html_`)."""

    name: str
    passed: bool
    mistake: str | None = None
    failed: str | None = None  # "not written yet", "runs", "shape", "dtype", "inputs unchanged", ...
    details: str = ""

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


def exercise(name: str) -> Exercise:
    if name not in EXERCISES:
        raise UserError(f"no exercise named {name!r}; the exercises are: {', '.join(EXERCISES)}")
    return EXERCISES[name]


def outputs_of(value) -> list:
    """A function's result as a list of outputs: a tensor, each tensor of a tuple, a list of ints."""
    if isinstance(value, tuple):
        return [item for part in value for item in outputs_of(part)]
    if isinstance(value, list) and all(isinstance(item, int) for item in value):
        return [torch.tensor(value, dtype=torch.long)]
    return [value.detach() if torch.is_tensor(value) else value]


def in_float64(args: tuple) -> tuple:
    return tuple(arg.double() if torch.is_tensor(arg) and arg.is_floating_point() else arg for arg in args)


def reference_outputs(ex: Exercise, args: tuple) -> tuple[list, list]:
    """Ours in the inputs' own precision (for shapes and dtypes) and in float64 (for values); modules
    (the MLP's layers, a block's parts) keep their float32 weights, so those cases stay in float32."""
    plain = outputs_of(ex.reference(*copy.deepcopy(args)))
    modules = any(callable(arg) and not torch.is_tensor(arg) for arg in args)
    exact = plain if modules else outputs_of(ex.reference(*in_float64(args)))
    return plain, exact


def same(a, b, exact_reference: bool = True) -> bool:
    """Outputs equal within float32 rounding (NaN equal to NaN, inf to inf, booleans and ints exactly)."""
    if not (torch.is_tensor(a) and torch.is_tensor(b)) or a.shape != b.shape:
        return False
    if not a.is_floating_point() or not b.is_floating_point():
        return torch.equal(a.long(), b.long()) if a.dtype != torch.bool or b.dtype == torch.bool else torch.equal(a, b)
    a, b = a.double(), b.double()
    scale = max(1.0, float(b[torch.isfinite(b)].abs().max()) if torch.isfinite(b).any() else 1.0)
    return bool(torch.allclose(a, b, rtol=1e-4, atol=1e-5 * scale, equal_nan=True))


def first_difference(given: torch.Tensor, ours: torch.Tensor) -> str:
    """The first entry (in row-major order) where given and ours part, and both whole if small."""
    g, o = given.detach().double().flatten(), ours.detach().double().flatten()
    scale = max(1.0, float(o[torch.isfinite(o)].abs().max()) if torch.isfinite(o).any() else 1.0)
    close = torch.isclose(g, o, rtol=1e-4, atol=1e-5 * scale, equal_nan=True)
    where = int((~close).nonzero()[0]) if (~close).any() else 0
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(where), tuple(ours.shape))) if ours.dim() else ()
    line = f"first difference at {list(index)}: yours {g[where].item():.6g}, ours {o[where].item():.6g}"
    if ours.numel() <= SHOWN_ENTRIES:
        torch.set_printoptions(precision=4)
        line += f"\nyours:\n{given.detach().double()}\nours:\n{ours.double()}"
    return line


def learner_traceback(error: BaseException) -> str:
    """The traceback of an exception raised in the learner's code, without our frames."""
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if not Path(frame.filename).is_relative_to(OURS)]
    lines = traceback.format_list(frames) + traceback.format_exception_only(type(error), error)
    return "".join(lines).rstrip()


def call(fn, args: tuple):
    return fn(*copy.deepcopy(args))


def recognise(ex: Exercise, cases: list, given: list[list]) -> tuple[str, str] | None:
    """The catalogued mistake whose outputs equal the learner's on every case: (id, words), or None."""
    for name, mistake in ex.mistakes.items():
        try:
            theirs = [outputs_of(call(mistake.compute, args)) for _, args in cases]
        except Exception:  # a variant that cannot run on some input cannot be what the learner wrote
            continue
        if all(len(a) == len(b) and all(same(x, y) and x.dtype == y.dtype for x, y in zip(a, b))
               for a, b in zip(given, theirs)):
            return name, f"your {ex.name} behaves exactly like one that {mistake.says}\nlook at: {mistake.look_at}"
    return None


def failure(ex: Exercise, cases: list, given: list[list] | None, failed: str, details: str) -> Report:
    """A failed report, naming the catalogued mistake when the learner's outputs are one."""
    found = recognise(ex, cases, given) if given is not None else None
    if found is not None:
        return Report(ex.name, False, found[0], failed, found[1] + "\n" + details)
    return Report(ex.name, False, None, failed, details)


def causality_broken(fn, args: tuple) -> str | None:
    """Attention: change the last key and value; no earlier query's output may change."""
    q, k, v, mask = args
    before = outputs_of(call(fn, args))[0]
    k2, v2 = k.clone(), v.clone()
    k2[..., -1, :] += 3.0
    v2[..., -1, :] += 3.0
    after = outputs_of(call(fn, (q, k2, v2, mask)))[0]
    if not same(after[..., :-1, :], before[..., :-1, :]):
        return ("changing the last key and value changed the outputs of earlier queries: the future leaks in\n"
                + first_difference(after[..., :-1, :], before[..., :-1, :]))
    return None


def check(name: str, fn) -> Report:
    """Check the learner's function `fn` for exercise `name`; returns a Report (see the module's doc)."""
    ex = exercise(name)
    cases = ex.cases()
    given_all: list[list] = []
    for label, args in cases:
        try:
            given_all.append(outputs_of(call(fn, args)))
        except NotImplementedError:
            return Report(name, False, None, "not written yet", "the function still raises NotImplementedError: "
                          "write its body (`minitransformer practice hint " + name + "` gives a hint)")
        except Exception as error:
            return Report(name, False, None, "runs", f'case "{label}" raised an exception in your code:\n'
                          + learner_traceback(error))
    for (label, args), given in zip(cases, given_all):
        plain, exact = reference_outputs(ex, args)
        if len(given) != len(plain):
            return failure(ex, cases, given_all, "outputs", f"returns {len(given)} output(s); ours returns {len(plain)}")
        for index, (mine, ours) in enumerate(zip(given, plain)):
            what = f"output {index}" if len(plain) > 1 else "the output"
            if not torch.is_tensor(mine):
                return failure(ex, cases, None, "type", f'case "{label}": {what} is a {type(mine).__name__}, ours a tensor')
            if mine.shape != ours.shape:
                return failure(ex, cases, given_all, "shape", f'case "{label}": {what} has shape {tuple(mine.shape)}; '
                               f"ours {tuple(ours.shape)}")
            if mine.dtype != ours.dtype:
                return failure(ex, cases, given_all, "dtype", f'case "{label}": {what} is {mine.dtype}; ours {ours.dtype}')
        inputs = copy.deepcopy(args)
        fn(*inputs)
        changed = [i for i, (a, b) in enumerate(zip(args, inputs)) if torch.is_tensor(a) and not torch.equal(a, b)]
        if changed:
            return failure(ex, cases, None, "inputs unchanged", f'case "{label}": your function changed its input '
                           f"number {changed[0] + 1} in place; compute a new tensor instead")
        for index in ex.rows_sum_to_one if label == cases[0][0] else ():  # the first case sums over the last axis
            sums = given[index].double().sum(-1)
            if not torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
                return failure(ex, cases, given_all, "rows sum to 1", f'case "{label}": rows of output {index} sum to '
                               f"{sums.flatten()[:4].tolist()}..., not 1")
    if ex.causal:
        broken = causality_broken(fn, cases[0][1])
        if broken:
            return failure(ex, cases, given_all, "causality", broken)
    for (label, args), given in zip(cases, given_all):
        _, exact = reference_outputs(ex, args)
        for index, (mine, ours) in enumerate(zip(given, exact)):
            if not same(mine, ours):
                what = f"output {index}" if len(exact) > 1 else "the output"
                return failure(ex, cases, given_all, f"values: {label}",
                               f'case "{label}": {what} differs from ours\n' + first_difference(mine, ours))
    return Report(name, True, None, None, f"{len(cases)} cases agree with ours")
