"""Run a training command and say when, on the wall clock of the whole command, val loss first
reached a goal.

python scripts/time_to_loss.py 1.40 minitransformer train --config configs/shakespeare_char_gpu.toml ...

Every line the command prints is shown with the seconds since the command started (start-up,
data preparation and compilation included); the evaluation lines ("step N: ... val loss X")
are what it reads.
"""

import os
import re
import subprocess
import sys
import time

EVALUATION = re.compile(r"step\s+(\d+): train loss [\d.]+, val loss ([\d.]+)")


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    goal, command = float(sys.argv[1]), sys.argv[2:]
    if command[0] == "minitransformer":
        command = [sys.executable, "-m", "minitransformer", *command[1:]]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    reached, best = None, None
    for line in process.stdout:
        seconds = time.perf_counter() - started
        if "%|" in line:  # a progress bar's line
            continue
        print(f"[{seconds:6.1f}s] {line}", end="", flush=True)
        found = EVALUATION.search(line)
        if found:
            step, loss = int(found[1]), float(found[2])
            if best is None or loss < best[1]:
                best = (step, loss, seconds)
            if reached is None and loss <= goal:
                reached = (step, loss, seconds)
    code = process.wait()
    total = time.perf_counter() - started
    if best is not None:
        print(f"best val {best[1]:.4f} at step {best[0]}, {best[2]:.1f} s into the command")
    print(f"val <= {goal}: " + (f"reached at step {reached[0]} ({reached[1]:.4f}), {reached[2]:.1f} s into the command"
                                if reached else "not reached") + f"; the command took {total:.1f} s (exit {code})")
    sys.exit(code)


if __name__ == "__main__":
    main()
