"""The command line end to end: train the tiny config, sample from it, resume, and every error path."""

import json
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from minitransformer.commands.cli import main

from tests.conftest import QUICK, ROOT, TINY, error_line, train_tiny
from tests.helpers import HANG_S, wait_until


def test_training_writes_checkpoints_and_metrics(tiny_run):
    for name in ("last", "best"):
        assert sorted(p.name for p in (tiny_run / name).iterdir()) == ["config.json", "model.safetensors", "state.pt", "tokenizer.json"]
    rows = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [0, 20, 40]
    assert rows[-1]["val_loss"] < rows[0]["val_loss"] - 0.5  # it learned something


def test_checkpoint_loads_without_unpickling_code(tiny_run):
    state = load_file(tiny_run / "last" / "model.safetensors")
    assert "wte.weight" in state and not any(key.startswith("_orig_mod.") for key in state)
    train_state = torch.load(tiny_run / "last" / "state.pt", weights_only=True)
    assert train_state["step"] == 40


def test_sample_streams_text_from_the_checkpoint(tiny_run, capsys):
    assert main(["sample", "--checkpoint", str(tiny_run), "--prompt", "ROMEO:", "--max-new-tokens", "50", "--seed", "3"]) == 0
    first = capsys.readouterr().out
    assert first.startswith("ROMEO:") and len(first) == len("ROMEO:") + 50 + 1
    main(["sample", "--checkpoint", str(tiny_run / "last"), "--prompt", "ROMEO:", "--max-new-tokens", "50", "--seed", "3"])
    assert capsys.readouterr().out == first  # same seed, same text; best and last are the final step here


def test_num_samples_and_greedy(tiny_run, capsys):
    assert main(["sample", "--checkpoint", str(tiny_run), "--num-samples", "2", "--temperature", "0", "--max-new-tokens", "20"]) == 0
    first, second = capsys.readouterr().out.split("\n---------------\n")
    assert first == second.rstrip("\n") or first.rstrip("\n") == second.rstrip("\n")  # greedy repeats itself


@pytest.mark.parametrize("args, fragment", [
    (["sample", "--checkpoint", "RUN", "--prompt", "héllo ~"], "'é'"),
    (["sample", "--checkpoint", "RUN", "--top-p", "2"], "top_p"),
    (["sample", "--checkpoint", "RUN", "--prompt", ""], "prompt is empty"),
    (["sample", "--checkpoint", "NOWHERE"], "no checkpoint"),
    (["train", "--config", TINY, "--set", "model.n_heads=2"], "valid keys"),
    (["train", "--config", TINY, "--set", "train.batch_size=-1"], "train.batch_size"),
    (["train", "--config", TINY, "--device", "tpu"], "unknown device"),
    (["train", "--config", TINY, "--set", "data.corpus=NOWHERE/x.txt"], "neither a file nor a folder"),
    (["train", "--config", "NOWHERE.toml"], "does not exist"),
])
def test_user_errors_are_one_line_and_exit_2(tiny_run, tmp_path, capsys, args, fragment):
    args = [arg.replace("RUN", str(tiny_run)).replace("NOWHERE", str(tmp_path / "missing")) for arg in args]
    if args[0] == "train":
        args += ["--out", str(tmp_path / "run")]
    assert main(args) == 2
    assert fragment in error_line(capsys)


def test_training_over_an_existing_run_is_refused(tiny_run, capsys):
    assert main(["train", "--config", TINY, "--out", str(tiny_run)]) == 2
    assert "--resume" in error_line(capsys)


def test_damaged_checkpoint_is_a_clear_error(tiny_run, tmp_path, capsys):
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for name in ("config.json", "tokenizer.json", "state.pt"):
        (damaged / name).write_bytes((tiny_run / "last" / name).read_bytes())
    (damaged / "model.safetensors").write_bytes((tiny_run / "last" / "model.safetensors").read_bytes()[:500])
    assert main(["sample", "--checkpoint", str(damaged)]) == 2
    assert "damaged" in error_line(capsys)


def test_resume_follows_the_same_curve(tmp_path):
    """2N steps in one go equal N steps, a stop, and N more after --resume (dropout on, so the
    random-number state matters too)."""
    common = ["--set", "train.max_steps=30", "--set", "train.eval_interval=5", "--set", "model.dropout=0.1"]
    assert train_tiny(tmp_path / "straight", *common) == 0
    assert train_tiny(tmp_path / "paused", *common, "--pause-after", "15") == 0
    assert json.loads((tmp_path / "paused" / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 15
    assert main(["train", "--out", str(tmp_path / "paused"), "--resume"]) == 0

    def curve(run):
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return [(row["step"], row["train_loss"], row["val_loss"]) for row in rows]

    assert curve(tmp_path / "paused") == curve(tmp_path / "straight")
    assert len(curve(tmp_path / "straight")) == 7
    straight = load_file(tmp_path / "straight" / "last" / "model.safetensors")
    paused = load_file(tmp_path / "paused" / "last" / "model.safetensors")
    for key in straight:
        assert torch.equal(straight[key], paused[key]), key


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    """2 micro-batches of 8 give the same first step as one batch of 16 (the loss is divided)."""
    from minitransformer.config import load_config
    from minitransformer.training.loop import train

    results = []
    for name, batch, accum in (("big", 16, 1), ("accum", 8, 2)):
        config = load_config(TINY, (f"train.out_dir={tmp_path / name}", f"train.batch_size={batch}",
                                    f"train.grad_accum={accum}", "train.max_steps=1", "train.sample_tokens=0"))
        train(config, quiet=True)
        results.append(load_file(tmp_path / name / "last" / "model.safetensors"))
    for key in results[0]:
        torch.testing.assert_close(results[1][key], results[0][key], atol=1e-6, rtol=1e-5)


def run_command(*args, **kwargs):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=HANG_S, **kwargs)


def test_entry_points(capsys, monkeypatch):
    """`python -m minitransformer` in a process of its own; the scripts in this one (runpy runs
    them as `python scripts/X.py` would), which saves starting PyTorch three more times."""
    import runpy

    assert run_command("-m", "minitransformer", "--version").stdout.startswith("minitransformer ")
    for script, flag in (("train.py", "--resume"), ("sample.py", "--top-p")):
        monkeypatch.setattr(sys, "argv", [script, "--help"])
        with pytest.raises(SystemExit) as stop:
            runpy.run_path(str(ROOT / "scripts" / script), run_name="__main__")
        assert stop.value.code == 0 and flag in capsys.readouterr().out


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_saves_last_and_says_how_to_resume(tmp_path, signum):
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "minitransformer", "train", "--config", TINY, "--out", str(out),
         "--set", "train.max_steps=100000", "--set", "train.eval_interval=50", *QUICK],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    metrics = out / "metrics.jsonl"
    wait_until(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 2, process, 0.1)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=HANG_S)
    assert process.returncode == 130, stderr
    assert "--resume" in stdout and "Traceback" not in stderr
    step = torch.load(out / "last" / "state.pt", weights_only=True)["step"]
    assert step >= 50


def test_corpus_shorter_than_a_window_is_a_clear_error(tmp_path, capsys):
    corpus = tmp_path / "short.txt"
    corpus.write_text("To be, or not to be, that is the question.\n" * 4)  # 172 characters; val gets 18
    assert main(["train", "--config", TINY, "--out", str(tmp_path / "run"), "--set", f"data.corpus={corpus}"]) == 2
    assert "too few for model.block_size = 32" in error_line(capsys)


def test_several_prompts_at_once_equal_one_at_a_time(tiny_run, tmp_path, capsys):
    common = ["sample", "--checkpoint", str(tiny_run), "--temperature", "0", "--max-new-tokens", "40", "--dtype", "float32"]
    alone = []
    for prompt in ("ROMEO:", "To be", "Q"):
        assert main([*common, "--prompt", prompt]) == 0
        alone.append(capsys.readouterr().out)
    assert main([*common, "--prompt", "ROMEO:", "--prompt", "To be", "--prompt", "Q"]) == 0
    assert capsys.readouterr().out == "\n---------------\n".join(alone)
    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text("ROMEO:\n\nTo be\nQ\n")
    assert main([*common, "--prompt-file", str(prompt_file)]) == 0
    assert capsys.readouterr().out == "\n---------------\n".join(alone)


def test_a_missing_prompt_file_is_one_line(tiny_run, tmp_path, capsys):
    assert main(["sample", "--checkpoint", str(tiny_run), "--prompt-file", str(tmp_path / "none.txt")]) == 2
    assert "--prompt-file" in error_line(capsys)


def test_bench_prints_training_and_sampling_figures(capsys):
    assert main(["bench", "--config", TINY, "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "training:" in out and "tokens/s" in out and "MFU" in out
    assert "at batch 1" in out and "at batch 8" in out
    # The bound: the measured bandwidth over the weights' bytes, and the share of it batch 1 reached.
    import re

    bound, megabytes, bandwidth, share = re.search(
        r"memory bound at batch 1: ([\d,]+) tokens/s \(([\d.]+) MB of weights a token at a measured copy bandwidth "
        r"of ([\d.]+) GB/s\); batch 1 runs at ([\d.e+-]+)% of it", out).groups()
    assert float(bound.replace(",", "")) == pytest.approx(float(bandwidth) * 1e3 / float(megabytes), rel=0.06)
    assert 0 < float(share)
