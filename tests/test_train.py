"""The training loop's parts: the schedule, the optimizers, resume, checkpoints' fallback, data
preparation that is interrupted, quiet mode and training from another thread."""

import copy
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.testing import assert_close

from minitransformer import GPT
from minitransformer.formats.checkpoint import find_checkpoint, load_checkpoint, model_from_checkpoint
from minitransformer.commands.cli import main
from minitransformer.config import TrainConfig, load_config
from minitransformer.training.data import prepare_data
from minitransformer.machine.device import MAX_AGE_S, MEASUREMENTS, PROBE_ROUNDS, choose_dtype, remember, speed_cache_path
from minitransformer.errors import UserError
from minitransformer.training.optim import Schedule, load_optimizer_state, lr_at, make_optimizers, resumed_schedule
from minitransformer.training.loop import train
from tests.conftest import TINY, error_line, train_tiny
from tests.helpers import HANG_S, small_config


def factors(train: TrainConfig, schedule: Schedule, steps: range) -> list[float]:
    """lr_at over steps, anchoring the cosine at warm-up's end as the training loop does."""
    out = []
    for step in steps:
        if step == train.warmup_steps and schedule.decay_start is None:
            schedule.decay_start = float(step)
        out.append(lr_at(step, float(step), schedule, train))
    return out


def test_warmup_then_cosine_from_warmups_end_without_a_jump():
    train = TrainConfig(warmup_steps=10, max_steps=110, time_budget_s=0, min_lr_ratio=0.1)
    values = factors(train, Schedule.for_config(train), range(110))
    assert values[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert values[10] == pytest.approx(1.0)  # the cosine starts at its peak where warm-up ends
    halfway = 10 + 50  # half of the cosine's 100 steps
    assert values[halfway] == pytest.approx(0.1 + 0.9 * 0.5)
    assert all(a >= b for a, b in zip(values[10:], values[11:]))  # decreasing after warm-up
    assert lr_at(110, 110.0, Schedule("steps", 110.0, 10.0), train) == pytest.approx(0.1)


@pytest.mark.parametrize("old_end, new_end, stand", [(100, 200, 100), (100, 300, 40), (100, 60, 40)])
def test_moving_the_end_continues_the_rate_and_reaches_the_minimum(old_end, new_end, stand):
    old_train = TrainConfig(warmup_steps=10, max_steps=old_end, time_budget_s=0, min_lr_ratio=0.05)
    new_train = TrainConfig(warmup_steps=10, max_steps=new_end, time_budget_s=0, min_lr_ratio=0.05)
    old = Schedule("steps", float(old_end), 10.0)
    before = lr_at(stand, float(stand), old, old_train)
    new = resumed_schedule(old, stand, float(stand), float(stand), new_train)
    assert lr_at(stand, float(stand), new, new_train) == pytest.approx(before)  # no jump
    assert lr_at(new_end, float(new_end), new, new_train) == pytest.approx(0.05)
    after = [lr_at(s, float(s), new, new_train) for s in range(stand, new_end + 1)]
    assert all(a >= b - 1e-12 for a, b in zip(after, after[1:]))


def test_extending_a_finished_run_trains_on_at_the_minimum():
    train = TrainConfig(warmup_steps=5, max_steps=50, time_budget_s=0, min_lr_ratio=0.02)
    old = Schedule("steps", 50.0, 5.0)
    new = resumed_schedule(old, 50, 50.0, 50.0, TrainConfig(warmup_steps=5, max_steps=80, time_budget_s=0, min_lr_ratio=0.02))
    assert [lr_at(s, float(s), new, train) for s in (50, 65, 80)] == pytest.approx([0.02] * 3)


def test_an_unchanged_end_keeps_the_saved_schedule():
    train = TrainConfig(warmup_steps=5, max_steps=50, time_budget_s=0)
    old = Schedule("steps", 50.0, 5.0)
    assert resumed_schedule(old, 20, 20.0, 20.0, train) is old


def test_adamw_groups_decay_matrices_and_embeddings_but_not_vectors():
    model = GPT(small_config())
    (adamw,) = make_optimizers(model, TrainConfig(optimizer="adamw", weight_decay=0.1))
    decayed, plain = adamw.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert any(p is model.wte.weight for p in decayed["params"])  # the (tied) embedding is decayed
    assert all(p.dim() >= 2 for p in decayed["params"]) and all(p.dim() == 1 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))


def test_adamw_on_a_cpu_updates_as_pytorchs_plain_loop_does():
    """make_optimizers runs AdamW fused on a CPU (one pass per tensor); given the same gradients,
    its updates are those of torch.optim.AdamW's per-tensor loop (nanoGPT's on a CPU) with the
    same groups, to rounding. (The same gradients, not the same batches: a gradient that is pure
    rounding noise, as the key bias's, would differ between two models apart by rounding, and
    Adam scales it up to a full step.)"""
    model = GPT(small_config())
    twin, before = copy.deepcopy(model), copy.deepcopy(model)
    train = TrainConfig(optimizer="adamw", learning_rate=1e-2, weight_decay=0.1, beta2=0.95)
    (fused,) = make_optimizers(model, train)
    twin_of = dict(zip(map(id, model.parameters()), twin.parameters()))
    # The same settings group by group; not the groups' own "fused" and "foreach", which AdamW
    # reads per group and would make this one fused too.
    plain = torch.optim.AdamW([{"params": [twin_of[id(p)] for p in group["params"]], "lr": group["lr"],
                                "betas": group["betas"], "eps": group["eps"], "weight_decay": group["weight_decay"]}
                               for group in fused.param_groups], foreach=False, fused=False)
    assert all(group["fused"] for group in fused.param_groups)
    assert not any(group["fused"] or group["foreach"] for group in plain.param_groups)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=generator) * 0.01
            twin_of[id(p)].grad = p.grad.clone()
        fused.step()
        plain.step()
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-6), name
    assert all(not torch.equal(p, b) for p, b in zip(model.parameters(), before.parameters()))  # all moved


def test_muon_takes_the_block_matrices_and_one_step_moves_every_parameter():
    model = GPT(small_config())
    muon, adamw = make_optimizers(model, TrainConfig(optimizer="muon"))
    in_muon = {id(p) for p in muon.param_groups[0]["params"]}
    assert in_muon == {id(p) for p in model.blocks.parameters() if p.dim() == 2}
    assert all(id(p) not in in_muon for group in adamw.param_groups for p in group["params"])
    before = [p.detach().clone() for p in model.parameters()]
    idx = torch.randint(0, 37, (4, 16))
    _, loss = model(idx, idx)
    loss.backward()
    for optimizer in (muon, adamw):
        optimizer.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_restored_optimizer_keeps_the_new_hyperparameters_and_the_old_moments():
    model = GPT(small_config())
    (old,) = make_optimizers(model, TrainConfig(optimizer="adamw", learning_rate=1e-3, weight_decay=0.1, beta2=0.99))
    _, loss = model(torch.randint(0, 37, (2, 8)), torch.randint(0, 37, (2, 8)))
    loss.backward()
    old.step()
    (new,) = make_optimizers(model, TrainConfig(optimizer="adamw", learning_rate=5e-4, weight_decay=0.0, beta2=0.95))
    load_optimizer_state(new, old.state_dict())
    assert new.param_groups[0]["peak_lr"] == 5e-4 and new.param_groups[0]["weight_decay"] == 0.0
    assert new.param_groups[0]["betas"] == (0.9, 0.95)
    first = model.wte.weight
    assert_close(new.state[first]["exp_avg"], old.state[first]["exp_avg"], atol=0, rtol=0)


def test_resume_applies_a_new_learning_rate(run_dir):
    assert train_tiny(run_dir, "--set", "train.max_steps=20", "--pause-after", "10") == 0
    assert main(["train", "--out", str(run_dir), "--resume", "--set", "train.learning_rate=1e-4",
                 "--set", "train.weight_decay=0.05", "--pause-after", "1"]) == 0
    groups = torch.load(run_dir / "last" / "state.pt", weights_only=True)["optimizers"][0]["param_groups"]
    assert groups[0]["peak_lr"] == 1e-4 and groups[0]["weight_decay"] == 0.05
    assert 0 < groups[0]["lr"] <= 1e-4


@pytest.mark.parametrize("warmup", [5, 0])
def test_resuming_with_a_warmup_shorter_than_the_step_reached_decays_as_a_fresh_run(run_dir, warmup):
    """Paused at step 10 of a 20-step warm-up, resumed with warm-up 5 (or 0): warm-up is over, so
    the cosine starts at once and ends at the minimum, as a fresh run's would."""
    common = ["--set", "train.max_steps=40", "--set", "train.eval_interval=10"]
    assert train_tiny(run_dir, *common, "--pause-after", "10") == 0
    assert main(["train", "--out", str(run_dir), "--resume", "--set", f"train.warmup_steps={warmup}"]) == 0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = {row["step"]: row["lr"] for row in rows}
    peak, floor = 3e-3, 3e-3 * TrainConfig().min_lr_ratio
    assert rates[20] < rates[10] or rates[20] < peak  # decaying, not held at the peak
    assert rates[30] < rates[20] and floor <= rates[40] < 1.5 * floor  # the last step's rate, just above the end


def test_switching_the_optimizer_on_resume_is_one_line(run_dir, capsys):
    assert train_tiny(run_dir, "--set", "train.max_steps=20", "--pause-after", "5") == 0
    capsys.readouterr()
    assert main(["train", "--out", str(run_dir), "--resume", "--set", "train.optimizer=muon"]) == 2
    assert "'adamw'" in error_line(capsys)


def test_extending_a_finished_run_continues_at_its_final_rate(run_dir):
    assert train_tiny(run_dir, "--set", "train.max_steps=20", "--set", "train.eval_interval=10",
                      "--set", "train.warmup_steps=5") == 0
    assert main(["train", "--out", str(run_dir), "--resume", "--set", "train.max_steps=30"]) == 0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [0, 10, 20, 30]
    config = load_config(TINY)
    assert rows[-1]["lr"] == pytest.approx(config.train.learning_rate * config.train.min_lr_ratio)


def test_a_checkpoint_left_aside_by_a_crash_is_found_and_resumed(run_dir):
    assert train_tiny(run_dir, "--set", "train.max_steps=20", "--pause-after", "10") == 0
    aside = run_dir / ".last.4242.x7y8z9w0.mt-old"
    (run_dir / "last").rename(aside)  # a crash between save's two renames
    assert find_checkpoint(run_dir / "last") == aside
    assert load_checkpoint(run_dir / "last", with_state=True).train_state["step"] == 10
    assert main(["train", "--out", str(run_dir), "--resume"]) == 0
    assert torch.load(run_dir / "last" / "state.pt", weights_only=True)["step"] == 20
    # No record says a running process made it, so it is never deleted: a note names it instead.
    assert aside.exists() and find_checkpoint(run_dir / "last") == run_dir / "last"


def test_interrupted_preparation_leaves_the_previous_data_whole(tmp_path, tiny_data, monkeypatch):
    data_dir = tmp_path / "data"
    shutil.copytree(tiny_data, data_dir)
    before = {p.name: p.read_bytes() for p in data_dir.iterdir()}

    def interrupted(scan, tokenizer, meta, corpus, folder, bar):
        np.arange(100, dtype=np.uint16).tofile(folder / "train.bin")  # GPT-2 ids over the char bins
        raise KeyboardInterrupt

    monkeypatch.setattr("minitransformer.training.data.write_splits", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_data("tinyshakespeare", "gpt2", 0.1, data_dir)
    assert {p.name: p.read_bytes() for p in data_dir.iterdir()} == before
    assert not list(tmp_path.glob("*mt-tmp*"))


def test_bins_that_disagree_with_meta_are_rebuilt(tmp_path, tiny_data):
    data_dir = tmp_path / "data"
    shutil.copytree(tiny_data, data_dir)
    with (data_dir / "train.bin").open("r+b") as file:
        file.truncate(1000)
    said = []
    data = prepare_data("tinyshakespeare", "char", 0.1, data_dir, say=said.append)
    assert said and "does not match" in said[0]
    assert len(data.train) == json.loads((data_dir / "meta.json").read_text())["train_tokens"] == 1_003_854


def quick_config(run_dir, *overrides):
    return load_config(TINY, (f"train.out_dir={run_dir}", "train.max_steps=10", "train.eval_interval=5",
                              "train.eval_batches=1", *overrides))


def test_quiet_prints_nothing(run_dir, capsys):
    result = train(quick_config(run_dir), quiet=True)
    assert result["step"] == 10 and result["stopped_by"] is None
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_train_runs_in_a_thread_other_than_the_main_one(run_dir):
    results, errors = [], []

    def work():
        try:
            results.append(train(quick_config(run_dir), quiet=True))
        except BaseException as error:  # reported below, with the thread's error
            errors.append(error)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=HANG_S)
    assert not errors and results[0]["step"] == 10


def test_pause_after_must_be_positive(run_dir):
    with pytest.raises(UserError, match="--pause-after"):
        train(quick_config(run_dir), pause_after=0, quiet=True)


def test_pause_after_says_how_to_resume(run_dir, capsys):
    assert train_tiny(run_dir, "--pause-after", "3") == 0
    assert f"minitransformer train --out {run_dir} --resume" in capsys.readouterr().out


def test_auto_dtype_never_picks_emulated_bf16_on_cuda(monkeypatch):
    calls = []

    def supported(including_emulation=True):
        calls.append(including_emulation)
        return including_emulation  # a pre-Ampere card: bf16 only by emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    assert choose_dtype("auto", torch.device("cuda")) == torch.float32
    assert calls == [False]


def test_final_sample_starts_from_a_token_the_corpus_has(tmp_path, capsys):
    corpus = tmp_path / "one_line.txt"
    corpus.write_text("abcdefghij klmnopqrst uvwxyz " * 400)  # no newline anywhere
    assert main(["train", "--config", TINY, "--out", str(tmp_path / "run"), "--set", f"data.corpus={corpus}",
                 "--set", "train.max_steps=5", "--set", "train.eval_batches=1", "--set", "train.sample_tokens=20"]) == 0
    sample = capsys.readouterr().out.split("sample:\n")[1].rstrip("\n")
    assert len(sample) == 1 + 20 and set(sample) <= set(corpus.read_text())


FIXTURES = Path(__file__).parent / "fixtures"


def test_a_version_0_1_checkpoint_with_model_pt_still_loads_and_resumes(tmp_path, capsys):
    """tests/fixtures/run_v0.1 was written by minitransformer 0.1 (weights in model.pt, no schedule)."""
    legacy = FIXTURES / "run_v0.1"
    checkpoint = load_checkpoint(legacy)
    model = model_from_checkpoint(checkpoint)
    saved = torch.load(legacy / "last" / "model.pt", weights_only=True)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    assert main(["sample", "--checkpoint", str(legacy), "--max-new-tokens", "10", "--prompt", "A"]) == 0
    assert len(capsys.readouterr().out) == 1 + 10 + 1
    run = tmp_path / "run"
    shutil.copytree(legacy, run)
    assert main(["train", "--out", str(run), "--resume", "--set", "train.max_steps=15"]) == 0
    assert torch.load(run / "last" / "state.pt", weights_only=True)["step"] == 15
    assert (run / "last" / "model.safetensors").is_file()


def test_compiled_training_saves_plain_weights_and_follows_the_eager_curve(tmp_path, tiny_data, monkeypatch):
    """train.compile = true (the default on CUDA) with torch.compile's "eager" backend, which
    traces the model like the real one but compiles nothing, so it runs in seconds on a CPU."""
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda module: real_compile(module, backend="eager"))
    eager, compiled = eager_and(tmp_path, tiny_data, "true")
    assert compiled == pytest.approx(eager, abs=1e-5)
    assert not any(key.startswith("_orig_mod.") for key in load_file(tmp_path / "true" / "last" / "model.safetensors"))


def eager_and(tmp_path, tiny_data, setting: str) -> tuple[list[float], list[float]]:
    """The val-loss curves of 10 tiny steps with train.compile = false and = setting."""
    curves = []
    for compiled in ("false", setting):
        out = tmp_path / compiled
        shutil.copytree(tiny_data, out / "data")
        assert train_tiny(out, "--set", "train.max_steps=10", "--set", "train.eval_interval=5",
                          "--set", f"train.compile={compiled}") == 0
        curves.append([json.loads(line)["val_loss"] for line in (out / "metrics.jsonl").read_text().splitlines()])
    return curves[0], curves[1]


class Timings:
    """A stand-in for measuring a model: each measurement's (float32, bfloat16) seconds in turn."""

    def __init__(self, *measurements):
        self.measurements = list(measurements)
        self.calls = []

    def __call__(self, dtype):
        self.calls.append(dtype)
        fp32, bf16 = self.measurements[min((len(self.calls) - 1) // (2 * PROBE_ROUNDS), len(self.measurements) - 1)]
        return fp32 if dtype == torch.float32 else bf16


@pytest.mark.parametrize("fp32_s, bf16_s, expected", [(1.0, 0.5, torch.bfloat16), (1.0, 0.95, torch.float32),
                                                       (1.0, 1.4, torch.float32)])
def test_auto_precision_measures_the_first_runs_then_remembers(monkeypatch, fp32_s, bf16_s, expected):
    monkeypatch.setattr("minitransformer.machine.device.cpu_computes_bf16", lambda: True)
    measure, said = Timings((fp32_s, bf16_s)), []
    what = f"a test model {fp32_s} {bf16_s}"
    for _ in range(MEASUREMENTS + 2):
        assert choose_dtype("auto", torch.device("cpu"), what, measure, said.append) == expected
    # Each measurement alternates the precisions; the first MEASUREMENTS runs measure, later ones remember.
    assert measure.calls == [torch.float32, torch.bfloat16] * PROBE_ROUNDS * MEASUREMENTS
    assert f"{fp32_s / bf16_s:.2f}x" in said[0] and "measured now" in said[0] and "remembered" in said[-1]
    assert choose_dtype("auto", torch.device("cpu"), what, measure, remeasure=True) == expected
    assert len(measure.calls) == 2 * PROBE_ROUNDS * (MEASUREMENTS + 1)  # --remeasure measures again


def test_a_measurement_on_a_loaded_machine_does_not_decide_for_good(monkeypatch):
    """The first measurement ran while another program took the CPU (bf16 looked slower); the
    fastest times over the next runs' measurements decide, and the verdict settles on bf16."""
    monkeypatch.setattr("minitransformer.machine.device.cpu_computes_bf16", lambda: True)
    measure = Timings((1.0, 0.87), (0.7, 0.5), (0.72, 0.52))  # 1.149x under load, then 1.4x
    verdicts = [choose_dtype("auto", torch.device("cpu"), "a loaded test", measure) for _ in range(5)]
    assert verdicts == [torch.float32] + [torch.bfloat16] * 4


@pytest.mark.parametrize("cache", ["null", "[1, 2]", "{", "{\"k\": 5}", ""])
def test_a_damaged_or_old_speed_cache_is_measured_again_and_repaired(monkeypatch, tmp_path, cache):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr("minitransformer.machine.device.cpu_computes_bf16", lambda: True)
    path = speed_cache_path()
    path.parent.mkdir(parents=True)
    path.write_text(cache)
    measure = Timings((1.0, 0.5))
    assert choose_dtype("auto", torch.device("cpu"), "x", measure) == torch.bfloat16
    known = json.loads(path.read_text())
    key = next(key for key in known if key.endswith("; x"))
    assert known[key]["measurements"] == 1
    known[key].update(measurements=MEASUREMENTS, measured_at=known[key]["measured_at"] - MAX_AGE_S - 1)  # settled, old
    path.write_text(json.dumps(known))
    calls = len(measure.calls)
    assert choose_dtype("auto", torch.device("cpu"), "x", measure) == torch.bfloat16
    assert len(measure.calls) == calls + 2 * PROBE_ROUNDS and not list(path.parent.glob("*mt-tmp"))


def test_two_writers_of_the_speed_cache_at_once_leave_it_valid(tmp_path, monkeypatch):
    """Each write goes through a temporary file of its own, so concurrent writers (threads here,
    processes alike) can lose an entry to each other but never leave the file damaged."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    def write(name):
        for i in range(200):
            remember(f"{name} {i}", i)

    writers = [threading.Thread(target=write, args=(name,)) for name in ("a", "b")]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    known = json.loads((tmp_path / "minitransformer" / "speed.json").read_text())
    assert {"a 199", "b 199"} & known.keys() and not list((tmp_path / "minitransformer").glob("*mt-tmp"))


def test_auto_precision_stays_float32_without_bf16_instructions(monkeypatch):
    monkeypatch.setattr("minitransformer.machine.device.cpu_computes_bf16", lambda: False)
    assert choose_dtype("auto", torch.device("cpu"), "anything", lambda dtype: 1.0 if dtype == torch.float32 else 0.1) \
        == torch.float32


def test_metrics_report_tokens_per_second_and_mfu(tiny_run):
    rows = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert "tokens_per_s" not in rows[0]  # no steps before the first evaluation
    for before, row in zip(rows, rows[1:]):
        # Tokens per second of training: evaluations are left out, so at least the wall clock's rate.
        wall_clock_rate = (row["tokens"] - before["tokens"]) / (row["elapsed_s"] - before["elapsed_s"])
        assert row["tokens_per_s"] >= 0.999 * wall_clock_rate
        assert 0 < row["mfu"] < 1


def test_reduce_overhead_compiles_in_that_mode_marks_every_step_and_follows_the_eager_curve(tmp_path, tiny_data,
                                                                                          monkeypatch):
    """train.compile = "reduce-overhead": torch.compile's CUDA-graph mode, with the start of each
    step marked. Traced here with the "eager" backend (no CUDA graphs on a CPU); the recording
    itself is checked by scripts/gpu_check.sh."""
    real_compile = torch.compile
    modes, marks = [], []
    monkeypatch.setattr(torch, "compile", lambda module, mode=None: modes.append(mode) or real_compile(module, backend="eager"))
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    eager, graphs = eager_and(tmp_path, tiny_data, "reduce-overhead")
    assert modes == ["reduce-overhead"] and len(marks) == 10
    assert graphs == pytest.approx(eager, abs=1e-5)


def test_reduce_overhead_refuses_torchrun():
    from minitransformer.training.distributed import Ranks
    from minitransformer.training.setup import training_module

    cfg = load_config(TINY, ("train.compile=reduce-overhead",)).train
    with pytest.raises(UserError, match="one process"):
        training_module(GPT(small_config()), cfg, torch.device("cpu"), Ranks(rank=0, world=2))


def test_the_precision_probe_times_the_whole_step_and_leaves_the_run_untouched(tiny_data, monkeypatch):
    """train.dtype = "auto" times forward, backward and the optimizer's update (Muon's Newton-Schulz
    in the precision being timed), on a copy: the model, its optimizers and torch's random state
    stay as they were."""
    import minitransformer.training.muon as muon_module
    from minitransformer.training.data import Dataset
    from minitransformer.training.setup import time_training_step

    seen = []
    real = muon_module.orthogonalize
    monkeypatch.setattr(muon_module, "orthogonalize", lambda *args: seen.append(args[-1]) or real(*args))
    cfg = load_config(TINY, ("train.optimizer=muon", "model.dropout=0.1")).train
    dataset = Dataset(np.memmap(tiny_data / "train.bin", dtype=np.uint16, mode="r"),
                      np.memmap(tiny_data / "val.bin", dtype=np.uint16, mode="r"), None)
    model = GPT(small_config(vocab_size=65, dropout=0.1))
    before = {name: value.clone() for name, value in model.state_dict().items()}
    rng = torch.get_rng_state()
    for dtype in (torch.float32, torch.bfloat16):
        assert time_training_step(model, cfg, dataset, torch.device("cpu"), dtype) > 0
    assert set(seen) == {torch.float32, torch.bfloat16}  # each precision's step ran its Newton-Schulz in it
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters()) and torch.equal(torch.get_rng_state(), rng)


def test_without_avx512_kernels_no_precision_is_bfloat16():
    """PyTorch restricted to AVX2 kernels (as on most laptops) emulates bfloat16: whatever cpuinfo
    says, the CPU counts as one without it, so training, Muon and decoding stay in float32."""
    import os
    import subprocess
    import sys

    code = "from minitransformer.machine.device import cpu_computes_bf16; print(cpu_computes_bf16())"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2"}
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_a_run_in_bfloat16_runs_newton_schulz_in_bfloat16_and_one_in_float32_in_float32(run_dir, monkeypatch):
    import minitransformer.training.muon as muon_module

    for dtype in ("float32", "bfloat16"):
        seen = []
        real = muon_module.orthogonalize
        monkeypatch.setattr(muon_module, "orthogonalize", lambda *args: seen.append(args[-1]) or real(*args))
        out = run_dir.parent / dtype
        shutil.copytree(run_dir / "data", out / "data")
        assert train_tiny(out, "--set", "train.optimizer=muon", "--set", f"train.dtype={dtype}",
                          "--set", "train.max_steps=2") == 0
        assert set(seen) == {getattr(torch, dtype)}
        monkeypatch.setattr(muon_module, "orthogonalize", real)
