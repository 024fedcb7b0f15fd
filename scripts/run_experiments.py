"""Run every experiment of docs/experiments.md as written there and print what each ended at.

python scripts/run_experiments.py [--only NAME ...] [--jobs 2]

The commands are read from the page itself (every `minitransformer train` line in its code
blocks), so the figures the page gives come from exactly the commands it shows. Each runs into a
scratch folder in place of its `--out`; the table gives the last evaluation's train and val loss
(and the first line of stderr for a run that stopped with an error, such as the diverging one).
--jobs N runs N at a time, each on one thread: the experiments run on steps, so their numbers do
not depend on how fast they ran.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PAGE = Path(__file__).parent.parent / "docs" / "experiments.md"


def commands() -> dict[str, list[str]]:
    """{run name: the command's arguments after `minitransformer`}, in the page's order."""
    found, inside = {}, False
    for line in PAGE.read_text().splitlines():
        if line.startswith("```"):
            inside = not inside
        elif inside and line.startswith("minitransformer train "):
            args = shlex.split(line)[1:]
            found[Path(args[args.index("--out") + 1]).name] = args
    return found


def run(name: str, args: list[str], scratch: Path, threads: int) -> tuple[str, str]:
    out = scratch / name
    args = list(args)
    args[args.index("--out") + 1] = str(out)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    finished = subprocess.run([sys.executable, "-m", "minitransformer", *args], capture_output=True, text=True, env=env)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()] if (out / "metrics.jsonl").exists() else []
    last = f"step {rows[-1]['step']}: train {rows[-1]['train_loss']:.4f}, val {rows[-1]['val_loss']:.4f}" if rows else "no rows"
    curve = ", ".join(f"{row['step']}: {row['val_loss']:.3f}" for row in rows)
    error = finished.stderr.strip().splitlines()[-1] if finished.returncode else ""
    return name, f"{last}   [val by step: {curve}]" + (f"\n    exit {finished.returncode}: {error}" if error else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()
    todo = {name: command for name, command in commands().items() if args.only is None or name in args.only}
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    with tempfile.TemporaryDirectory(prefix="experiments-") as scratch, ThreadPoolExecutor(args.jobs) as pool:
        for name, result in pool.map(lambda item: run(*item, Path(scratch), threads), todo.items()):
            print(f"{name:18} {result}", flush=True)


if __name__ == "__main__":
    main()
