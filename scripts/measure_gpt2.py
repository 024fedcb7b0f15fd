"""Figures for a full-size GPT-2 (124M) on this machine: import time and peak memory, sampling
speed with the key/value cache, and the time of one fine-tuning step.

python scripts/measure_gpt2.py [--folder HF_GPT2_FOLDER] [--work DIR]

Without --folder it makes a 124M GPT-2 folder with random weights using transformers (the
figures depend on the shapes, not on the values). Each measurement runs the real command in a
fresh process, so the peak memory is that command's alone.
"""

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(*args: str) -> tuple[float, float, str]:
    """Run `minitransformer ARGS` in a new process: (seconds, peak memory in GiB, stdout)."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "minitransformer", *args], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"minitransformer {' '.join(args)} failed:\n{result.stderr}")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest child so far
    return seconds, peak_kib / 2**20, result.stdout


def make_random_gpt2(folder: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config()).save_pretrained(folder)  # GPT2Config() is the 124M model's shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", help="a Hugging Face GPT-2 folder (default: make a random 124M one)")
    parser.add_argument("--work", help="where to write (default: a temporary folder)")
    parser.add_argument("--tokens", type=int, default=200, help="tokens to sample")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="gpt2-figures-"))
    folder = Path(args.folder) if args.folder else work / "gpt2-random"
    if not args.folder:
        make_random_gpt2(folder)
        print(f"made a random 124M GPT-2 folder in {folder}")

    seconds, peak, _ = run("import-gpt2", str(folder), "--out", str(work / "imported"))
    print(f"import-gpt2: {seconds:.1f} s for the whole command (Python and torch start-up included), peak memory {peak:.2f} GiB")

    prompt = "ROMEO: But soft, what light"
    seconds_short, _, _ = run("sample", "--checkpoint", str(work / "imported"), "--prompt", prompt, "--max-new-tokens", "1")
    seconds_long, _, _ = run("sample", "--checkpoint", str(work / "imported"), "--prompt", prompt,
                             "--max-new-tokens", str(args.tokens + 1))
    rate = args.tokens / (seconds_long - seconds_short)  # start-up and loading cancel out
    print(f"sample: {rate:.1f} tokens/s on CPU with the key/value cache, batch 1 ({args.tokens} tokens)")

    config = Path(__file__).parent.parent / "configs" / "finetune_gpt2_shakespeare.toml"
    common = ["train", "--config", str(config), "--init-from", str(work / "imported"), "--set", "train.time_budget_s=0",
              "--set", "train.eval_batches=1", "--set", "train.sample_tokens=0", "--set", "train.eval_interval=1000"]
    one, _, _ = run(*common, "--out", str(work / "ft1"), "--set", "train.max_steps=1")
    three, peak, _ = run(*common, "--out", str(work / "ft3"), "--set", "train.max_steps=3")
    print(f"fine-tuning with {config.name}: {(three - one) / 2:.1f} s per step (4,096 tokens), "
          f"peak memory {peak:.2f} GiB (the largest command so far)")


if __name__ == "__main__":
    main()
