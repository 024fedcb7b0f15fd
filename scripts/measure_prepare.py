"""Time and peak memory of preparing a large corpus: Tiny Shakespeare repeated to about 200 MB.

python scripts/measure_prepare.py [--megabytes 200] [--tokenizer char|gpt2|bpe] [--one-line]

--one-line writes the corpus without a single newline (newlines become spaces), the case that
used to be tokenised on one thread in one piece.

Each preparation runs in a fresh process (so the peak memory is its own) and prints the figures.
"""

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from minitransformer.training.corpus import read_corpus

PREPARE = """
import sys
from pathlib import Path
from minitransformer.training.data import prepare_data
data = prepare_data(sys.argv[1], sys.argv[2], 0.1, Path(sys.argv[3]), say=lambda line: print(line, file=sys.stderr),
                    progress=False)
print(len(data.train), len(data.val))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--tokenizer", action="append", help="char, gpt2, bpe (a 4,096-token BPE learned first; default: char and gpt2)")
    parser.add_argument("--one-line", action="store_true", help="no newline anywhere in the corpus")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="prepare-"))
    corpus = work / "corpus.txt"
    text = read_corpus("tinyshakespeare")
    if args.one_line:
        text = text.replace("\n", " ")
    with corpus.open("w", encoding="utf-8") as file:
        for _ in range(max(1, args.megabytes * 2**20 // len(text.encode("utf-8")))):
            file.write(text)
    print(f"corpus: {corpus.stat().st_size / 2**20:.0f} MiB{', one line' if args.one_line else ''}")
    for tokenizer in args.tokenizer or ["char", "gpt2"]:
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-c", PREPARE, str(corpus), tokenizer, str(work / tokenizer)],
                                capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # the largest child so far, GiB
        train, val = map(int, result.stdout.split())
        print(f"{tokenizer}: {seconds:.1f} s (process start included), peak memory {peak:.2f} GiB so far, "
              f"{train:,} train and {val:,} val tokens")
        if result.stderr.strip():
            print("  " + result.stderr.strip())


if __name__ == "__main__":
    main()
