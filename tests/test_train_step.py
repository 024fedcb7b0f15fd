"""The training step's bookkeeping: divergence noted on the device and read later, float16 with
a gradient scaler (whose skipped steps are not divergence), and the scaler kept across resume."""

import pytest
import torch

from minitransformer.config import load_config
from minitransformer.training.loop import Diverged, check_finite, train_step
from minitransformer.training.setup import start_run
from tests.conftest import TINY, train_tiny


def tiny_run_object(run_dir, dtype: str, device: str = "cpu", *overrides: str):
    """A Run of the tiny config in run_dir (AdamW unless overridden), as `train` starts one."""
    config = load_config(TINY, (f"train.out_dir={run_dir}", f"train.dtype={dtype}", "train.optimizer=adamw", *overrides))
    return start_run(config, run_dir, torch.device(device), say=lambda message: None)


def step(run):
    loss = train_step(run)
    run.state.step += 1
    return loss


def overflow_once(parameter: torch.Tensor):
    """Make the next backward give parameter an infinite gradient (once)."""
    handle = []
    handle.append(parameter.register_hook(lambda grad: (handle.pop().remove(), grad * float("inf"))[1]))


def test_float16_skips_an_overflowing_step_without_calling_it_divergence(run_dir):
    run = tiny_run_object(run_dir, "float16")
    assert run.scaler.is_enabled() and run.dtype == torch.float16
    step(run)
    before = [p.detach().clone() for p in run.model.parameters()]
    scale = run.scaler.get_scale()
    overflow_once(run.model.wte.weight)
    step(run)
    assert all(torch.equal(a, b) for a, b in zip(before, run.model.parameters()))  # the step was skipped
    assert run.scaler.get_scale() == scale / 2
    check_finite(run, None)  # no divergence
    step(run)
    assert not all(torch.equal(a, b) for a, b in zip(before, run.model.parameters()))  # the next one trains


def test_float32_notes_the_first_nonfinite_step_and_stops_when_read(run_dir):
    run = tiny_run_object(run_dir, "float32")
    assert not run.scaler.is_enabled()
    step(run)
    overflow_once(run.model.wte.weight)
    step(run)  # step 1: infinite gradient norm, noted on the device only
    step(run)  # later steps change nothing in the note
    with pytest.raises(Diverged, match=r"diverged at step 1: the gradient norm is (inf|nan)"):
        check_finite(run, None)


def test_a_collapsed_loss_scale_is_divergence(run_dir):
    run = tiny_run_object(run_dir, "float16")
    step(run)
    run.scaler.update(2.0**-30)
    with pytest.raises(Diverged, match="loss scale"):
        check_finite(run, 0)


def test_float16_training_saves_its_scaler_and_resumes_with_it(run_dir):
    assert train_tiny(run_dir, "--set", "train.dtype=float16", "--set", "train.max_steps=6",
                      "--set", "train.eval_interval=3") == 0
    state = torch.load(run_dir / "last" / "state.pt", weights_only=True)
    assert state["dtype"] == "float16" and state["scaler"]["scale"] > 0
    assert train_tiny(run_dir, "--resume", "--set", "train.dtype=float16", "--set", "train.max_steps=8",
                      "--set", "train.eval_interval=3") == 0
    resumed = torch.load(run_dir / "last" / "state.pt", weights_only=True)
    assert resumed["step"] == 8 and resumed["scaler"]["scale"] == state["scaler"]["scale"]


def test_reading_the_note_only_at_reports_still_stops_at_the_first_bad_step(run_dir, capsys, monkeypatch):
    """The GPU's way (the host reads the device about once a second), run on a CPU: weights made
    NaN after step 7, so step 8's loss is NaN; the run goes on to the evaluation at step 10, which
    reads the note first and stops, naming step 8, with nothing saved after step 0."""
    from minitransformer.training import loop

    monkeypatch.setattr(loop, "reads_every_step", lambda run: False)
    monkeypatch.setattr(loop, "REPORT_S", 3600.0)  # no report during the run: only the evaluation reads
    real_step = loop.train_step

    def poisoned(run):
        loss = real_step(run)
        if run.state.step == 7:
            with torch.no_grad():
                run.model.wte.weight.fill_(float("nan"))  # every later loss is NaN
        return loss

    monkeypatch.setattr(loop, "train_step", poisoned)
    assert train_tiny(run_dir, "--set", "train.max_steps=20", "--set", "train.eval_interval=10") == 2
    assert "diverged at step 8: the loss is nan" in capsys.readouterr().err
    assert torch.load(run_dir / "last" / "state.pt", weights_only=True)["step"] == 0
