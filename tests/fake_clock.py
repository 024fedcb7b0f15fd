"""A clock that moves only when the test says, for the time-budget tests (test_budget.py).

`install(monkeypatch-like setter, tick, eval_s, token_s)` makes each training step cost tick
seconds of it, each evaluation eval_s, each generated token token_s (the final sample and its
prediction). Run as a module (`python -m tests.fake_clock ARGS`) it runs the command line on such
a clock, from the FAKE_TICK, FAKE_EVAL_S and FAKE_TOKEN_S variables; under torchrun rank r's
steps cost (1 + r / 2) x the tick, so ranks disagree and only rank 0's readings may decide.
"""

import os
import sys


class FakeClock:
    """`spend` adds seconds (a step's, an evaluation's, a token's)."""

    START = 1000.0

    def __init__(self):
        self.time = self.START

    def __call__(self) -> float:
        return self.time

    def spend(self, seconds: float) -> None:
        self.time += seconds

    def used(self) -> float:
        return self.time - self.START


def install(setattr_, tick: float, eval_s: float = 0.0, token_s: float = 0.0) -> FakeClock:
    """Run training on a fake clock; setattr_ is monkeypatch.setattr (or plain setattr)."""
    from minitransformer.training import budget, loop

    clock = FakeClock()
    setattr_(budget, "now", clock)
    setattr_(budget, "EXIT_S", 0.0)  # budgets of a second or two here: no exit to allow for
    real_evaluate, real_step, real_generate = loop.evaluate, loop.train_step, loop.generate

    def costly_step(*args, **kwargs):
        clock.spend(tick)
        return real_step(*args, **kwargs)

    def costly_evaluate(*args, **kwargs):
        clock.spend(eval_s)
        return real_evaluate(*args, **kwargs)

    def costly_generate(model, idx, max_new_tokens, *args, **kwargs):
        clock.spend(token_s * max_new_tokens)
        return real_generate(model, idx, max_new_tokens, *args, **kwargs)

    setattr_(loop, "evaluate", costly_evaluate)
    setattr_(loop, "train_step", costly_step)
    setattr_(loop, "generate", costly_generate)
    return clock


if __name__ == "__main__":
    from minitransformer.commands.cli import main

    rank = int(os.environ.get("RANK", "0"))
    fake = install(setattr, float(os.environ["FAKE_TICK"]) * (1 + rank / 2), float(os.environ.get("FAKE_EVAL_S", 0)),
                   float(os.environ.get("FAKE_TOKEN_S", 0)))
    code = main(sys.argv[1:])
    print(f"fake clock, rank {rank}: {fake.used():.6f} s", file=sys.stderr)
    sys.exit(code)
