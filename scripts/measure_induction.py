"""The induction lesson measured as a learner runs it: prints the figures docs/induction.md quotes.

python scripts/measure_induction.py [--twice] [--config configs/induction.toml]

Runs `minitransformer train --config configs/induction.toml` in a scratch folder (the whole
command's wall clock), then `induction_report` on its last/ checkpoint, and prints: the seconds,
both halves' losses and their ratio, the best induction score in a later layer and the best
previous-token score in an earlier one, the share of the gap that ablating the named induction
heads closes, and the in-context score at the first and last evaluations (the phase change).
--twice trains a second time with the same seed and says whether it names the same heads.
To see a laptop without AVX-512 on a CPU that has it: ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parent.parent


def train_once(config: str, out: Path) -> float:
    """Seconds of the whole train command."""
    began = time.perf_counter()
    finished = subprocess.run([sys.executable, "-m", "minitransformer", "train", "--config", config, "--out", str(out),
                               "--set", "train.sample_tokens=0"], capture_output=True, text=True)
    if finished.returncode != 0:
        sys.exit("training failed:\n" + finished.stderr[-2000:])
    return time.perf_counter() - began


def measure(out: Path) -> dict:
    from minitransformer import load_model
    from minitransformer.induction import induction_report

    model, _ = load_model(out / "last")
    report = induction_report(model)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"first": report.first, "second": report.second, "ratio": report.second / report.first,
            "induction": report.induction[1:].max().item(), "previous": report.previous[:-1].max().item(),
            "previous_heads": report.previous_heads, "induction_heads": report.induction_heads,
            "gap_closed": report.gap_closed(), "in_context": [(row["step"], row["in_context"]) for row in rows]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "induction.toml"))
    parser.add_argument("--twice", action="store_true", help="train again with the same seed: the same heads?")
    args = parser.parse_args()
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU kernels "
          f"{torch.backends.cpu.get_cpu_capability()}")
    with tempfile.TemporaryDirectory(prefix="measure-induction-") as scratch:
        out = Path(scratch) / "run"
        seconds = train_once(args.config, out)
        found = measure(out)
        closed = "none named" if found["gap_closed"] is None else f"{found['gap_closed']:.0%}"
        print(f"train command: {seconds:.1f} s")
        print(f"halves: {found['first']:.3f} -> {found['second']:.3f} nats (ratio {found['ratio']:.3f}; at most 1/3 wanted)")
        print(f"best induction score in a later layer {found['induction']:.2f}, best previous-token score in an "
              f"earlier one {found['previous']:.2f} (0.4 wanted)")
        print(f"heads: previous-token {found['previous_heads']}, induction {found['induction_heads']}; ablating the "
              f"induction heads closes {closed} of the gap (half wanted)")
        curve = found["in_context"]
        print("in-context score by step: " + " ".join(f"{step}:{score:.2f}" for step, score in curve))
        if args.twice:
            again = Path(scratch) / "again"
            train_once(args.config, again)
            repeat = measure(again)
            same = (repeat["previous_heads"], repeat["induction_heads"]) == (found["previous_heads"], found["induction_heads"])
            print(f"the same seed again: {'the same heads' if same else 'OTHER HEADS'} ({repeat['induction_heads']})")


if __name__ == "__main__":
    main()
