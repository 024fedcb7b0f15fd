"""The README's promises under faults and bad input: a run folder is never overwritten or shared,
a crash or Ctrl-C leaves nothing half-written, divergence stops the run, and every mistake of the
user or refusal of the environment is one line with exit code 2 (130 for Ctrl-C)."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from minitransformer.commands.cli import main
from minitransformer.training.memory import count_parameters
from minitransformer.training.run_folder import RunLock
from tests.conftest import QUICK, ROOT, TINY, error_line, train_tiny
from tests.helpers import HANG_S, small_config, wait_until


def copy_run(source, target, keep=None):
    """A copy of a run folder, or of only the entries named in keep."""
    shutil.copytree(source, target, ignore=None if keep is None else
                    lambda folder, names: [n for n in names if folder == str(source) and n not in keep])
    return target


@pytest.mark.parametrize("trace", ["last", "best", ".last.123.abc.mt-old", ".best.123.abc.mt-old", "metrics.jsonl"])
def test_a_fresh_training_refuses_any_trace_of_a_run(tiny_run, tmp_path, capsys, trace):
    source = copy_run(tiny_run, tmp_path / "source")
    if trace.endswith("mt-old"):  # the copy a crash between a save's two renames leaves aside
        (source / trace.split(".")[1]).rename(source / trace)
    run = copy_run(source, tmp_path / "run", keep={trace, "data"})
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    assert train_tiny(run, "--set", "train.max_steps=5") == 2
    assert "already holds a run" in error_line(capsys)
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before


def test_a_second_training_into_a_locked_folder_is_refused_with_the_pid(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path / "run")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from minitransformer.training.run_folder import RunLock\n"
         "with RunLock(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(60)", str(run)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "locked"
        rows_before = (run / "metrics.jsonl").read_text()
        assert main(["train", "--out", str(run), "--resume", "--set", "train.max_steps=60"]) == 2
        assert f"pid {holder.pid}" in error_line(capsys)
        assert (run / "metrics.jsonl").read_text() == rows_before
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_taken_over_and_said(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path / "run")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (run / "run.lock").write_text(f"{gone.pid}\n")
    assert main(["train", "--out", str(run), "--resume", "--set", "train.max_steps=45"]) == 0
    assert f"left by pid {gone.pid}" in capsys.readouterr().out
    assert not (run / "run.lock").exists()


def test_the_lock_is_exclusive_within_one_process_too(tmp_path):
    tmp_path.joinpath("run").mkdir()
    with RunLock(tmp_path / "run"):
        assert (tmp_path / "run" / "run.lock").read_text().strip() == str(os.getpid())
    with RunLock(tmp_path / "run"):  # released, so it can be taken again
        pass


def test_names_that_look_like_ours_are_never_deleted_only_named(tiny_run, tmp_path, capsys):
    """A temporary's name says which process made it, but a user's file can bear such a name too
    (`.notes.99999.abc.mt-tmp`): no name decides a deletion. Leftovers of processes that no longer
    run are named in a note and left; names like `X.tmp` or `X.old` are not even named."""
    run = copy_run(tiny_run, tmp_path / "run")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (run / f".last.{gone.pid}.k2j4h5g6.mt-tmp").mkdir()
    (run / f".last.{gone.pid}.k2j4h5g6.mt-tmp" / "model.safetensors").write_bytes(b"half")
    (run / f".notes.{gone.pid}.abc.mt-tmp").write_text("my notes")
    (run / f".cfg.{gone.pid}.zz.mt-tmp").mkdir()
    (run / f".cfg.{gone.pid}.zz.mt-tmp" / "keep.txt").write_text("mine")
    alive = run / f".best.{os.getppid()}.a1b2c3d4.mt-tmp"  # a running process's
    alive.mkdir()
    users = [run / "last.tmp", run / "draft.tmp", run / "best.old", run / "notes.old", run / "data.tmp"]
    for path in users:
        path.write_text("mine")
    before = {path.name for path in run.iterdir()}
    assert main(["train", "--out", str(run), "--resume", "--set", "train.max_steps=45"]) == 0
    assert before <= {path.name for path in run.iterdir()} and alive.is_dir()
    assert (run / f".notes.{gone.pid}.abc.mt-tmp").read_text() == "my notes"
    assert (run / f".cfg.{gone.pid}.zz.mt-tmp" / "keep.txt").read_text() == "mine"
    assert all(path.read_text() == "mine" for path in users)
    note = capsys.readouterr().out
    assert f".cfg.{gone.pid}.zz.mt-tmp" in note and "left alone" in note and "last.tmp" not in note


def test_checkpoint_files_are_fsynced_before_the_rename(run_dir, monkeypatch):
    synced = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor):
        synced.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        return real_fsync(descriptor)

    def replace(source, target):
        if Path(source).name.startswith(".last.") and str(source).endswith(".mt-tmp"):
            assert str(source / "model.safetensors") in synced and str(source / "state.pt") in synced
            assert str(source) in synced  # the folder's entries too
        return real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr("minitransformer.machine.files.os.replace", replace)
    assert train_tiny(run_dir, "--set", "train.max_steps=2") == 0
    assert str(run_dir) in synced  # the folder holding the renamed checkpoint


def test_divergence_stops_at_once_and_keeps_the_last_finite_checkpoint(run_dir, capsys):
    code = train_tiny(run_dir, "--set", "train.optimizer=adamw", "--set", "train.learning_rate=1e4",
                      "--set", "train.grad_clip=0", "--set", "train.eval_interval=2", "--set", "train.sample_tokens=50")
    assert code == 2
    err = error_line(capsys)
    assert "diverged at step" in err and "learning_rate" in err and "grad_clip" in err
    weights = load_file(run_dir / "last" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(row["val_loss"] == row["val_loss"] for row in rows)  # no NaN row was logged


def nan_checkpoint(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path / "nan")
    path = run / "best" / "model.safetensors"
    weights = load_file(path)
    weights["blocks.0.mlp.c_fc.weight"][0, 0] = float("nan")
    save_file(weights, path)
    return run


@pytest.mark.parametrize("command", [["sample"], ["inspect", "--prompt", "To be"]])
def test_sampling_or_inspecting_non_finite_weights_is_one_line(tiny_run, tmp_path, capsys, command):
    run = nan_checkpoint(tiny_run, tmp_path)
    assert main([command[0], "--checkpoint", str(run / "best"), *command[1:]]) == 2
    assert "NaN" in error_line(capsys)


def test_config_naming_a_folder(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    assert "is a folder" in error_line(capsys)


def test_out_under_a_regular_file(tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    assert train_tiny(tmp_path / "file" / "run") == 2
    assert "cannot make the run folder" in error_line(capsys)


def test_an_output_folder_that_cannot_be_written(tmp_path, capsys, monkeypatch):
    real_open = os.open

    def refuse(path, *args, **kwargs):  # as root, chmod cannot make a folder read-only; refuse by hand
        if str(path).endswith("run.lock"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    assert train_tiny(tmp_path / "run") == 2
    assert "cannot write in the run folder" in error_line(capsys)


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(tiny_run, tmp_path, capsys, monkeypatch):
    run = copy_run(tiny_run, tmp_path / "run")
    before = (run / "last" / "model.safetensors").read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("minitransformer.formats.checkpoint.save_file", full)
    assert main(["train", "--out", str(run), "--resume", "--set", "train.max_steps=60"]) == 2
    assert "No space left on device" in error_line(capsys)
    assert (run / "last" / "model.safetensors").read_bytes() == before
    assert not list(run.rglob("*mt-tmp*")) and not (run / "run.lock").exists()


def test_a_full_disk_while_preparing_data(tmp_path, capsys, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("minitransformer.training.data.write_splits", full)
    assert train_tiny(tmp_path / "run") == 2
    assert "could not write the tokenised data" in error_line(capsys)
    assert not (tmp_path / "run" / "data").exists() and not list(tmp_path.rglob("*mt-tmp*"))


def test_a_damaged_last_metrics_line_is_repaired_on_resume(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path / "run")
    with (run / "metrics.jsonl").open("a") as file:
        file.write('{"step": 60, "train_lo')  # a crash in the middle of a row
    assert main(["train", "--out", str(run), "--resume", "--set", "train.max_steps=45"]) == 0
    assert "damaged" in capsys.readouterr().out
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [0, 20, 40, 45]


def test_a_damaged_state_file_is_one_line_on_resume_and_sampling_does_not_need_it(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path / "run")
    (run / "last" / "state.pt").write_bytes(os.urandom(4096))
    assert main(["train", "--out", str(run), "--resume", "--set", "train.max_steps=60"]) == 2
    assert "damaged" in error_line(capsys)
    assert main(["sample", "--checkpoint", str(run / "last"), "--max-new-tokens", "5"]) == 0


@pytest.mark.parametrize("args", [["train", "--pause-after", "1.5"], ["sample", "--top-k", "many"], ["bogus"],
                                  ["train", "--no-such-flag"]])
def test_command_line_mistakes_are_one_line(capsys, args):
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    error_line(capsys)


def write_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("damage, fragment", [
    (lambda ckpt: write_json(ckpt / "tokenizer.json", lambda d: d.update(chars=d["chars"][:10])), "tokenizer.json does not belong to the weights"),
    (lambda ckpt: write_json(ckpt / "config.json", lambda d: d["model"].update(n_embd=64)), "does not describe"),
    (lambda ckpt: write_json(ckpt / "config.json", lambda d: d["model"].update(n_layer=3)), "does not describe"),
    # The same tensor shapes, another function: only the recorded digest tells.
    (lambda ckpt: write_json(ckpt / "config.json", lambda d: d["model"].update(n_head=2)), "does not describe"),
    (lambda ckpt: write_json(ckpt / "config.json", lambda d: d["model"].update(position="sinusoidal")), "does not describe"),
    (lambda ckpt: (ckpt / "model.safetensors").write_bytes(os.urandom(4096)), "damaged"),
    (lambda ckpt: write_json(ckpt / "config.json", lambda d: d["model"].update(n_layer="two")), "damaged"),
    (lambda ckpt: (ckpt / "config.json").write_text("{"), "damaged"),
])
def test_damaged_checkpoints_are_one_short_line(tiny_run, tmp_path, capsys, damage, fragment):
    run = copy_run(tiny_run, tmp_path / "run")
    damage(run / "best")
    assert main(["sample", "--checkpoint", str(run / "best"), "--max-new-tokens", "5"]) == 2
    err = error_line(capsys)
    assert fragment in err and len(err) < 400


@pytest.mark.parametrize("temperature", ["nan", "-inf", "inf", "-1"])
def test_bad_temperatures_are_one_line(tiny_run, capsys, temperature):
    assert main(["sample", "--checkpoint", str(tiny_run), f"--temperature={temperature}"]) == 2
    assert "temperature" in error_line(capsys)


def test_a_tiny_temperature_samples_greedily(tiny_run, capsys):
    common = ["sample", "--checkpoint", str(tiny_run), "--prompt", "ROMEO:", "--max-new-tokens", "40"]
    assert main([*common, "--temperature", "1e-40"]) == 0
    tiny = capsys.readouterr().out
    assert main([*common, "--temperature", "0"]) == 0
    assert tiny == capsys.readouterr().out


@pytest.mark.parametrize("overrides, knob", [
    (["model.n_layer=100000", "model.n_embd=128"], "model.n_layer or model.n_embd"),
    (["model.n_embd=65536"], "model.n_layer or model.n_embd"),
    (["model.block_size=100000"], "train.batch_size or model.block_size"),
    (["train.batch_size=100000000"], "train.batch_size or model.block_size"),
])
def test_too_big_for_this_machine_is_refused_before_allocating(run_dir, capsys, monkeypatch, overrides, knob):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was built before the memory check refused it")

    monkeypatch.setattr("minitransformer.training.setup.GPT", no_model)
    assert train_tiny(run_dir, *[arg for o in overrides for arg in ("--set", o)]) == 2
    err = error_line(capsys)
    assert "GiB" in err and knob in err
    assert not (run_dir / "last").exists()


@pytest.mark.parametrize("overrides", [{}, {"bias": False}, {"position": "rope"}, {"tie_weights": False},
                                       {"n_layer": 3, "n_embd": 48, "n_head": 3}])
def test_parameter_count_from_the_config_equals_the_models(overrides):
    from minitransformer import GPT

    config = small_config(**overrides)
    assert count_parameters(config) == GPT(config).num_parameters()


def test_ctrl_c_during_data_preparation_exits_130_and_leaves_nothing_half_written(tmp_path, capsys, monkeypatch):
    def interrupted(scan, tokenizer, meta, corpus, folder, bar):
        (folder / "train.bin").write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr("minitransformer.training.data.write_splits", interrupted)
    assert train_tiny(tmp_path / "run") == 130
    assert "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # the folder it made, empty, goes too


@pytest.mark.parametrize("during_interrupt", [True, False])
def test_an_error_left_by_an_interrupt_is_the_interrupt_and_any_other_is_a_bug(during_interrupt, tmp_path, capsys,
                                                                                monkeypatch):
    """A signal's KeyboardInterrupt inside threading's locks (tiktoken's thread pool) surfaces as
    `RuntimeError: release unlocked lock` raised while handling it: still exit 130 in one line,
    nothing left. The same RuntimeError with no interrupt behind it is a bug: its traceback shows."""
    def broken(scan, tokenizer, meta, corpus, folder, bar):
        (folder / "train.bin").write_bytes(b"partial")
        if not during_interrupt:
            raise RuntimeError("release unlocked lock")
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("release unlocked lock")

    monkeypatch.setattr("minitransformer.training.data.write_splits", broken)
    if during_interrupt:
        assert train_tiny(tmp_path / "run") == 130
        assert capsys.readouterr().err.strip() == "interrupted (Ctrl-C or SIGTERM)"
    else:
        with pytest.raises(RuntimeError, match="release unlocked lock"):
            train_tiny(tmp_path / "run")
    assert not (tmp_path / "run").exists()  # the folder it made, empty, goes too


def test_ctrl_c_during_saving_keeps_the_previous_checkpoint(tiny_run, tmp_path, capsys, monkeypatch):
    run = copy_run(tiny_run, tmp_path / "run")
    before = (run / "last" / "state.pt").read_bytes()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # a second Ctrl-C, which stops at once

    monkeypatch.setattr("minitransformer.formats.checkpoint.save_file", interrupted)
    assert main(["train", "--out", str(run), "--resume", "--set", "train.max_steps=60"]) == 130
    assert "Traceback" not in capsys.readouterr().err
    assert (run / "last" / "state.pt").read_bytes() == before
    assert not list(run.rglob("*mt-tmp*")) and not (run / "run.lock").exists()


def test_ctrl_c_during_the_first_evaluation_saves_and_exits_130(run_dir, capsys, monkeypatch):
    from minitransformer.training import loop as train_module

    real_evaluate = train_module.evaluate

    def evaluate_then_ctrl_c(*args):
        os.kill(os.getpid(), signal.SIGINT)
        return real_evaluate(*args)

    monkeypatch.setattr(train_module, "evaluate", evaluate_then_ctrl_c)
    assert train_tiny(run_dir) == 130
    assert "--resume" in capsys.readouterr().out
    assert torch.load(run_dir / "last" / "state.pt", weights_only=True)["step"] == 0


def test_ctrl_c_at_start_up_in_a_real_process(tmp_path):
    """SIGINT shortly after start, whatever the program is doing by then (imports aside): no
    traceback, exit 130, and no temporary file left."""
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "minitransformer", "train", "--config", TINY, "--out", str(out), *QUICK],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    wait_until(out.exists, process, 0.01)  # the run folder appears once the imports are done
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=HANG_S)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert not list(out.rglob("*mt-tmp*")) and not (out / "run.lock").exists()


def test_break_in_attention_keeps_an_installed_tracer():
    from minitransformer import GPT
    from minitransformer.inspection import break_in_attention

    seen = []

    def tracer(frame, event, arg):
        seen.append(frame.f_code.co_name)
        return None

    class Continue:
        def message(self, text):
            pass

        def set_trace(self, frame):
            pass

        def trace_dispatch(self, frame, event, arg):
            return None

    model = GPT(small_config()).eval()
    sys.settrace(tracer)
    try:
        with break_in_attention(model, 0, debugger=Continue()), torch.no_grad():
            model(torch.randint(0, 37, (1, 5)))
        assert sys.gettrace() is tracer
    finally:
        sys.settrace(None)
    assert "forward" in seen  # the other frames were still handed to the installed tracer


# Every numeric key of [model], [data] and [train], with values that must be refused: out of range,
# not finite (NaN passes `x <= 0`), or of the wrong type. A test below checks that none is missing.
BAD_VALUES = {
    "model.block_size": ["0", "-1", "1.5"], "model.n_layer": ["0", "-2"], "model.n_head": ["0", "3"],
    "model.n_embd": ["0", "-32"], "model.dropout": ["-0.1", "1.0", "nan", "inf"],
    "model.layer_norm_eps": ["0", "-1e-5", "nan", "inf"],
    "data.val_fraction": ["0", "1", "-0.1", "nan", "inf"],
    "data.vocab_size": ["0", "257", "-1", "1.5", "1000001"],
    "data.repeated_share": ["-0.1", "1.5", "nan", "inf"], "data.repeated_min": ["0", "-1", "2.5"],
    "data.repeated_max": ["0", "1.5"],
    "train.seed": ["-1", "18446744073709551616", "1.5"], "train.batch_size": ["0", "-1"], "train.grad_accum": ["0"],
    "train.max_steps": ["0", "-5"], "train.time_budget_s": ["-1", "nan", "inf"], "train.tuned_steps": ["-1", "2.5"],
    "train.learning_rate": ["0", "-1e-3", "nan", "inf"], "train.muon_learning_rate": ["0", "nan", "-inf"],
    "train.min_lr_ratio": ["-0.1", "1.5", "nan"], "train.warmup_steps": ["-1", "2.5"],
    "train.weight_decay": ["-0.1", "nan", "inf"], "train.beta1": ["1.0", "-0.1", "nan"], "train.beta2": ["1", "nan"],
    "train.grad_clip": ["-1", "nan", "inf"], "train.eval_interval": ["0"], "train.eval_batches": ["0", "-1"],
    "train.sample_tokens": ["-1"],
}


def test_the_bad_values_table_covers_every_numeric_config_key():
    from dataclasses import fields

    from minitransformer.config import DataConfig, ModelConfig, TrainConfig

    numeric = {f"{section}.{field.name}" for section, config in (("model", ModelConfig), ("data", DataConfig),
                                                                 ("train", TrainConfig))
               for field in fields(config) if field.type in (int, float)} - {"model.vocab_size"}  # the tokenizer's
    assert numeric == BAD_VALUES.keys()


@pytest.mark.parametrize("key, value", [(key, value) for key, values in BAD_VALUES.items() for value in values])
def test_bad_config_values_are_one_line_naming_the_key_before_anything_is_written(tmp_path, capsys, key, value):
    assert main(["train", "--config", TINY, "--out", str(tmp_path / "run"), "--set", f"{key}={value}"]) == 2
    assert key in error_line(capsys)
    assert not (tmp_path / "run").exists()


BAD_FLAGS = [
    ["sample", "--temperature", "nan"], ["sample", "--temperature", "-1"], ["sample", "--temperature", "inf"],
    ["sample", "--top-k", "0"], ["sample", "--top-k", "-3"], ["sample", "--top-p", "0"], ["sample", "--top-p", "1.5"],
    ["sample", "--top-p", "nan"], ["sample", "--top-p", "-0.5"], ["sample", "--max-new-tokens", "-1"],
    ["sample", "--num-samples", "0"], ["sample", "--seed", "-1"], ["sample", "--seed", str(10**23)],
    ["sample", "--num-samples", "100000000", "--prompt", "A", "--prompt", "B"],
    ["train", "--pause-after", "0"], ["train", "--pause-after", "-2"],
    ["bench", "--config", TINY, "--steps", "0"], ["bench", "--config", TINY, "--steps", "-1"],
    ["inspect", "--prompt", "AB", "--layer", "99"], ["inspect", "--prompt", "AB", "--layer", "-1"],
    ["inspect", "--prompt", "AB", "--head", "99"], ["inspect", "--prompt", "AB", "--break", "x"],
    ["inspect", "--prompt", "AB", "--break", "99"], ["inspect", "--prompt", "AB", "--break", "0.99"],
]


@pytest.mark.parametrize("args", BAD_FLAGS, ids=lambda args: " ".join(args[:1] + args[-2:]))
def test_bad_command_line_values_are_one_line(tiny_run, tmp_path, capsys, args):
    where = {"sample": ["--checkpoint", str(tiny_run)], "inspect": ["--checkpoint", str(tiny_run)],
             "train": ["--config", TINY, "--out", str(tmp_path / "run")], "bench": []}[args[0]]
    assert main([args[0], *where, *args[1:]]) == 2
    error_line(capsys)


def test_a_tiny_top_p_keeps_the_most_likely_token(tiny_run, capsys):
    """1e-300 rounds to 0 in float32; the most likely token must still be kept (greedy)."""
    assert main(["sample", "--checkpoint", str(tiny_run), "--prompt", "A", "--max-new-tokens", "20",
                 "--top-p", "1e-300", "--dtype", "float32"]) == 0
    nucleus = capsys.readouterr().out
    assert main(["sample", "--checkpoint", str(tiny_run), "--prompt", "A", "--max-new-tokens", "20",
                 "--temperature", "0", "--dtype", "float32"]) == 0
    assert nucleus == capsys.readouterr().out
