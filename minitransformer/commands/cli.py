"""The `minitransformer` command line: argument parsing only; the work lives in other modules.

Design choice: a `UserError` raised anywhere below, and an `OSError` (the environment refusing:
a full disk, a read-only folder), is printed as one line on stderr with exit code 2; Ctrl-C and a
plain `kill` (SIGTERM) exit with 130, after training has saved, and anywhere else with nothing
half-written; any other exception is a bug and keeps its traceback.
"""

import argparse
import json
import os
import signal
import sys
import threading
from contextlib import nullcontext
from pathlib import Path

from .. import __version__
from ..config import load_config
from ..errors import UserError

DEFAULT_RUN = "runs/shakespeare_char"
DEFAULT_PRACTICE = "practice"  # the learner's exercise folder
INTERRUPTED_EXIT_CODE = 130  # the shell's code for a program stopped by Ctrl-C (128 + SIGINT)


def run_train(args: argparse.Namespace) -> int:
    from ..formats.checkpoint import read_run_config
    from ..training.run_folder import check_has_run
    from ..practice.workspace import HerCodeFailed, blamed, use as practice_use
    from ..training import budget
    from ..training.loop import train

    overrides = list(args.set)
    if args.out is not None:  # `--out ''` is refused by the config, not taken for the default
        overrides.append(f"train.out_dir={json.dumps(args.out)}")
    if args.device:
        overrides.append(f"train.device={json.dumps(args.device)}")
    tables = None
    if args.init_from and args.config is None:
        tables = {}  # the architecture comes from the checkpoint, not from the default [model] table
    elif args.resume and args.config is None:
        # Without --config, a resumed run continues with the config it was started with.
        check_has_run(Path(args.out or DEFAULT_RUN))
        tables = read_run_config(Path(args.out or DEFAULT_RUN) / "last")
    try:
        config = load_config(args.config, tuple(overrides), tables)
    except UserError as error:
        error.everywhere = True  # every torchrun process reads the same config
        raise
    pieces = {}
    if args.practice is not None:
        from .practice_command import written_pieces

        if args.practice == "":
            raise UserError("--practice '' names no folder; give your exercise folder, e.g. --practice practice")
        try:
            pieces = written_pieces(Path(args.practice))
        except HerCodeFailed as error:
            print(f"FAILED: {error}", file=sys.stderr)
            return 1
    # A time budget is the command's wall clock: it counts from the process's start (budget.py).
    with practice_use(**pieces) if pieces else nullcontext():
        try:
            result = train(config, resume=args.resume, pause_after=args.pause_after, init_from=args.init_from,
                           remeasure=args.remeasure, started=budget.command_started())
        except HerCodeFailed as error:  # her piece raised inside the model: her traceback, not ours
            print(f"FAILED: {error}", file=sys.stderr)
            return 1
        except UserError as error:
            if blamed():  # NaN or inf from her piece, not from the learning rate
                raise UserError(f"your {', '.join(blamed())} returned NaN or inf from finite inputs; run: minitransformer "
                                f"practice check (the training stopped: {str(error).split(';')[0]})") from None
            raise
    return INTERRUPTED_EXIT_CODE if result["stopped_by"] == "interrupt" else 0


def run_practice(args: argparse.Namespace) -> int:
    from .practice_command import practice

    return practice(args.action, args.names, DEFAULT_PRACTICE if args.dir is None else args.dir, args.dir is not None)


def run_import(args: argparse.Namespace) -> int:
    from .convert import import_gpt2

    import_gpt2(args.source, args.out)
    return 0


def run_export(args: argparse.Namespace) -> int:
    from .convert import export_gpt2

    export_gpt2(args.checkpoint, args.out)
    return 0


def run_sample(args: argparse.Namespace) -> int:
    from .sample import read_prompt_file, sample

    prompts = list(args.prompt or [])
    if args.prompt_file:
        prompts += read_prompt_file(args.prompt_file)
    sample(args.checkpoint, prompts or ["\n"], args.max_new_tokens, args.temperature, args.top_k, args.top_p,
           args.num_samples, args.seed, args.device, args.dtype, args.remeasure)
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    from .inspect_command import inspect_model

    inspect_model(args.checkpoint, args.prompt, args.layer, args.head, args.png, args.break_at, args.device,
                  args.ablate, args.how, args.lens, args.html)
    return 0


def run_heads(args: argparse.Namespace) -> int:
    from .heads import rank_heads

    rank_heads(args.checkpoint, args.corpus, args.batches, args.how, args.png, args.device)
    return 0


def run_induction(args: argparse.Namespace) -> int:
    from .induction_command import find_induction_heads

    find_induction_heads(args.checkpoint, args.length, args.batch, args.threshold, args.seed, args.png, args.device)
    return 0


def run_tokenize(args: argparse.Namespace) -> int:
    from .tokenize import tokenize

    tokenize(args.tokenizer, args.text, args.merges)
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from .bench import bench

    bench(args.config, args.device, args.steps, remeasure=args.remeasure)
    return 0


def run_plot(args: argparse.Namespace) -> int:
    from .plot import plot_runs

    plot_runs(args.run_dirs, args.png, args.split)
    return 0


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a mistake on the command line is one line (with where to find help), as every
    other mistake is, instead of the usage text followed by the error."""

    def error(self, message: str):
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="minitransformer",
        description="A minimal, explicit GPT: train it, sample from it, look inside it.",
    )
    parser.add_argument("--version", action="version", version=f"minitransformer {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser("train", help="train a model (default: a character-level GPT on Tiny Shakespeare)")
    train.add_argument("--config", metavar="PATH", help="a TOML config such as configs/tiny.toml (default: shakespeare_char)")
    train.add_argument("--out", metavar="DIR", help=f"the run folder (default: the config's train.out_dir, {DEFAULT_RUN})")
    train.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                       help="override a config key, e.g. --set train.max_steps=200 --set model.position=rope")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.add_argument("--device", metavar="D", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    train.add_argument("--pause-after", metavar="N", type=int,
                       help="stop after N steps, saving the run to continue later with --resume")
    train.add_argument("--init-from", metavar="DIR",
                       help="fine-tune: start from this checkpoint, run or Hugging Face GPT-2 folder's model")
    train.add_argument("--remeasure", action="store_true",
                       help="measure again which precision train.dtype = \"auto\" picks, instead of the remembered verdict")
    train.add_argument("--practice", metavar="DIR",
                       help="train with your own pieces from DIR (minitransformer practice): every one you have written "
                            "stands in for ours; attention runs on the written-out path, so steps are slower")
    train.set_defaults(run=run_train)

    sample = commands.add_parser("sample", help="write text from a trained model")
    sample.add_argument("--checkpoint", metavar="DIR", default=DEFAULT_RUN,
                        help=f"a run folder (uses its best checkpoint), a checkpoint folder, or a Hugging Face GPT-2 folder (default: {DEFAULT_RUN})")
    sample.add_argument("--prompt", action="append",
                        help="text to continue (default: a newline); repeat it to continue several prompts at once")
    sample.add_argument("--prompt-file", metavar="FILE", help="a text file with one prompt per line")
    sample.add_argument("--max-new-tokens", type=int, default=500, metavar="N")
    sample.add_argument("--temperature", type=float, default=0.8, metavar="T", help="0 is greedy (default: 0.8)")
    sample.add_argument("--top-k", type=int, metavar="K", help="sample only from the K most likely tokens")
    sample.add_argument("--top-p", type=float, metavar="P", help="sample only from the most likely tokens whose probabilities reach P")
    sample.add_argument("--num-samples", type=int, default=1, metavar="N")
    sample.add_argument("--seed", type=int, default=1337, metavar="S")
    sample.add_argument("--device", default="auto", metavar="D")
    sample.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="precision of generation; auto takes a 16-bit one where it is measured faster (default); "
                             "on a CPU, bfloat16 without bf16 instructions and float16 round only the weights")
    sample.add_argument("--remeasure", action="store_true", help="measure again which precision --dtype auto picks")
    sample.set_defaults(run=run_sample)

    inspect = commands.add_parser("inspect", help="show a model's attention for a prompt, or stop inside it in pdb")
    inspect.add_argument("--checkpoint", metavar="DIR", default=DEFAULT_RUN,
                         help=f"a run, checkpoint or Hugging Face GPT-2 folder (default: {DEFAULT_RUN})")
    inspect.add_argument("--prompt", required=True, help="the text whose attention to show")
    inspect.add_argument("--layer", type=int, metavar="L", help="show only this layer (from 0; default: all)")
    inspect.add_argument("--head", type=int, metavar="H", help="show only this head (from 0; default: all)")
    inspect.add_argument("--png", metavar="FILE", help="also draw the heatmaps into FILE (needs matplotlib)")
    inspect.add_argument("--break", dest="break_at", metavar="LAYER[.HEAD]",
                         help="stop in pdb inside that layer's attention function, e.g. --break 1.2")
    inspect.add_argument("--ablate", action="append", metavar="L.H|L.mlp",
                         help="switch a head (e.g. 2.1) or an MLP (e.g. 0.mlp) off and show what changes; repeatable")
    inspect.add_argument("--how", choices=["zero", "mean"],
                         help="with --ablate: zeros, or the output's mean over held-out text (default: zero)")
    inspect.add_argument("--lens", action="store_true",
                         help="the logit lens: what each layer's residual stream would predict")
    inspect.add_argument("--html", metavar="FILE",
                         help="write the explorer: one self-contained page of attention, logit lens and ablations")
    inspect.add_argument("--device", default="cpu", metavar="D")
    inspect.set_defaults(run=run_inspect)

    heads = commands.add_parser("heads", help="rank every attention head by how much the loss rises without it")
    heads.add_argument("checkpoint", metavar="CHECKPOINT", help="a run, checkpoint or Hugging Face GPT-2 folder")
    heads.add_argument("--corpus", metavar="TEXT",
                       help="text to measure the loss on (default: the run's validation split, else Tiny Shakespeare's last 10%%)")
    heads.add_argument("--batches", type=int, default=4, metavar="N", help="batches of 8 windows (default: 4)")
    heads.add_argument("--how", choices=["zero", "mean"], default="zero", help="ablation: zeros or the mean (default: zero)")
    heads.add_argument("--png", metavar="FILE", help="also draw the layers x heads grid (needs matplotlib)")
    heads.add_argument("--device", default="cpu", metavar="D")
    heads.set_defaults(run=run_heads)

    induction = commands.add_parser("induction", help="find a model's induction heads on repeated random tokens, "
                                                      "and switch them off")
    induction.add_argument("--checkpoint", default="runs/induction", metavar="DIR",
                           help="a run (its last/ checkpoint), checkpoint or GPT-2 folder (default: runs/induction, "
                                "from configs/induction.toml)")
    induction.add_argument("--length", type=int, default=40, metavar="R", help="random tokens, repeated once (default: 40)")
    induction.add_argument("--batch", type=int, default=16, metavar="B", help="sequences averaged (default: 16)")
    induction.add_argument("--threshold", type=float, default=0.4, help="the score that names a head (default: 0.4)")
    induction.add_argument("--seed", type=int, default=0, help="seeds the random tokens (default: 0)")
    induction.add_argument("--png", metavar="FILE", help="also draw the losses, scores, pattern and ablation (matplotlib)")
    induction.add_argument("--device", default="cpu", metavar="D")
    induction.set_defaults(run=run_induction)

    practicing = commands.add_parser("practice", help="write the GPT's pieces yourself: exercises, checks, your "
                                     "functions inside a trained model")
    practicing.add_argument("action", nargs="?", choices=["start", "check", "hint", "solution", "run"],
                            help="start [DIR]: write the stubs; check [NAME ...]; hint NAME; solution NAME; run: your "
                                 "pieces in the shipped model (none: list the exercises and your progress)")
    practicing.add_argument("names", nargs="*", metavar="NAME", help="exercise names (or the folder, for start)")
    practicing.add_argument("--dir", metavar="DIR", help=f"your exercise files (default: {DEFAULT_PRACTICE})")
    practicing.set_defaults(run=run_practice)

    importer = commands.add_parser("import-gpt2", help="turn a Hugging Face GPT-2 folder (or hub name) into a checkpoint")
    importer.add_argument("source", metavar="SOURCE",
                          help="a folder with config.json and model.safetensors, or gpt2, gpt2-medium, gpt2-large, "
                               "gpt2-xl, distilgpt2 (fetched with huggingface_hub)")
    importer.add_argument("--out", metavar="DIR", required=True, help="the checkpoint folder to write")
    importer.set_defaults(run=run_import)

    exporter = commands.add_parser("export-gpt2", help="write a model as a Hugging Face GPT-2 folder for transformers")
    exporter.add_argument("checkpoint", metavar="CHECKPOINT", help="a run folder or a checkpoint folder")
    exporter.add_argument("--out", metavar="DIR", required=True, help="the folder to write")
    exporter.set_defaults(run=run_export)

    tokenizing = commands.add_parser("tokenize", help="show how a tokenizer cuts a text: pieces, ids, and BPE merges")
    tokenizing.add_argument("tokenizer", metavar="CHECKPOINT_OR_TOKENIZER",
                            help="a checkpoint or run folder, a tokenizer.json, or a tiktoken name such as gpt2")
    tokenizing.add_argument("text", metavar="TEXT")
    tokenizing.add_argument("--merges", action="store_true", help="show every merge applied to each chunk (BPE)")
    tokenizing.set_defaults(run=run_tokenize)

    benchmark = commands.add_parser("bench", help="measure training and sampling speed on this machine")
    benchmark.add_argument("--config", metavar="PATH", help="the config whose model to measure (default: shakespeare_char)")
    benchmark.add_argument("--device", default="auto", metavar="D")
    benchmark.add_argument("--steps", type=int, default=5, metavar="N", help="training steps to time after a warm-up")
    benchmark.add_argument("--remeasure", action="store_true", help="measure the precisions \"auto\" picks again")
    benchmark.set_defaults(run=run_bench)

    plot = commands.add_parser("plot", help="plot a run's train and val loss, or compare several runs")
    plot.add_argument("run_dirs", metavar="RUN_DIR", nargs="+",
                      help="a run folder with metrics.jsonl; several are overlaid with a legend")
    plot.add_argument("--split", choices=("val", "train"), default="val",
                      help="the loss compared when several runs are given (default: val)")
    plot.add_argument("--png", metavar="FILE", help="draw a PNG (needs matplotlib; otherwise a text chart)")
    plot.set_defaults(run=run_plot)
    return parser


def interrupt(signum, frame):
    """SIGTERM (a plain `kill`) outside the training loop: stop as Ctrl-C does (the loop saves first)."""
    raise KeyboardInterrupt


def run_command(args: argparse.Namespace) -> int:
    """args.run(args); an error raised while an interrupt was being handled is that interrupt.

    The interrupt is an exception raised wherever the main thread happens to be. Inside library
    code that is not written for that (threading's locks, e.g. tiktoken's thread pool), it can
    leave a lock half released, and the next line fails with `RuntimeError: release unlocked
    lock` chained to the KeyboardInterrupt. The user stopped the program: that is what we report.
    """
    try:
        return args.run(args)
    except Exception as error:
        if interrupted_during(error):
            raise KeyboardInterrupt from error
        raise


def interrupted_during(error: BaseException) -> bool:
    """Whether a KeyboardInterrupt is among the exceptions error was raised while handling."""
    seen = set()
    while error is not None and id(error) not in seen:  # a chain can loop back on itself
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def main(argv: list[str] | None = None) -> int:
    if sys.platform == "win32":
        # The run lock (os.pread, advisory locks) and the check that a process still runs
        # (os.kill(pid, 0)) do not exist or mean something else on Windows.
        report("error: minitransformer runs on Linux and macOS; on Windows, run it in WSL (Windows Subsystem for Linux)")
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    readable_text(args)
    if args.command is None:
        parser.print_help()
        return 0
    previous = None
    if threading.current_thread() is threading.main_thread():  # only the main thread sets handlers
        previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        return run_command(args)
    except UserError as error:
        report(f"error: {error}", error.everywhere)
        return 2
    except KeyboardInterrupt:
        # Training saves and says how to resume on the first Ctrl-C; this is a Ctrl-C anywhere
        # else (start-up, data preparation, a second Ctrl-C). Every file is written atomically,
        # so nothing half-written is left behind.
        report("\ninterrupted (Ctrl-C or SIGTERM)")
        return INTERRUPTED_EXIT_CODE
    except BrokenPipeError:
        # The reader of our output went away (`minitransformer sample | head`): stop quietly, and
        # point stdout at nothing so that Python's final flush cannot complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as error:
        # The environment refused: a full disk, a read-only or vanished folder, a path that is a
        # file. Not a bug in the program, so one line rather than a traceback.
        where = f" ({error.filename})" if error.filename else ""
        report(f"error: {error.strerror or error}{where}; check the disk space and the permissions there")
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def readable_text(args: argparse.Namespace) -> None:
    """Texts given on the command line (prompts, a text to tokenize) with bytes that are not UTF-8
    (Python keeps them as lone surrogates, which nothing can print or encode) get U+FFFD in their
    place, once, here. Paths keep their bytes: they name files."""
    for name in ("prompt", "text"):
        value = getattr(args, name, None)
        if isinstance(value, str):
            setattr(args, name, utf8(value))
        elif isinstance(value, list):
            setattr(args, name, [utf8(item) for item in value])


def utf8(text: str) -> str:
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def report(message: str, everywhere: bool = False) -> None:
    """Print a message on stderr. Under torchrun, a message that every process has alike is
    printed by rank 0 alone; any other is printed by the process that has it, naming its rank."""
    rank = os.environ.get("RANK", "0")
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or rank == "0":
        print(message, file=sys.stderr)
    elif not everywhere:
        print(f"rank {rank}: {message.lstrip()}", file=sys.stderr)
