"""Training from Python, as a notebook does: `model, tokenizer, metrics = train(...)`."""

import json
import shutil

import pytest
import torch

from minitransformer import GPT, generate, train
from minitransformer.errors import UserError
from tests.conftest import TINY

QUICK = dict(sample_tokens=0, eval_batches=2)


@pytest.fixture
def out(tmp_path, tiny_data):
    folder = tmp_path / "nb"
    shutil.copytree(tiny_data, folder / "data")
    return folder


def test_train_returns_the_model_its_tokenizer_and_the_metrics(out, capsys):
    model, tokenizer, metrics = train(TINY, out=out, max_steps=20, eval_interval=10, **QUICK)
    assert isinstance(model, GPT) and not model.training and model.config.n_layer == 2
    assert [row["step"] for row in metrics] == [0, 10, 20]
    text = tokenizer.decode(generate(model, torch.tensor([tokenizer.encode("RO")]), 5, temperature=0.0)[0].tolist())
    assert text.startswith("RO") and len(text) == 7
    captured = capsys.readouterr()
    assert "step     10: train loss" in captured.out  # evaluation lines as they happen
    assert "%|" in captured.err  # the progress bar (tqdm.auto: a widget in Jupyter, text here)


def test_overrides_by_name_or_with_their_table_and_resume(out):
    train(TINY, out=out, quiet=True, **{"train.max_steps": 10, "model.n_embd": 48, "eval_interval": 5}, **QUICK)
    model, _, metrics = train(out=out, resume=True, quiet=True, max_steps=15)
    assert model.config.n_embd == 48 and [row["step"] for row in metrics] == [0, 5, 10, 15]


def test_errors_give_python_advice_not_command_line_flags(out):
    train(TINY, out=out, quiet=True, max_steps=5, **QUICK)
    with pytest.raises(UserError) as error:
        train(TINY, out=out, quiet=True, max_steps=5)
    assert "resume=True" in str(error.value) and "--" not in str(error.value)
    assert error.value.__cause__ is None and error.value.__suppress_context__
    with pytest.raises(UserError, match="unknown setting 'max_step'.*max_steps"):
        train(TINY, out=out, max_step=5)
    with pytest.raises(UserError, match="train.learning_rate must be a finite number"):
        train(TINY, out=out, learning_rate=float("nan"))


def test_a_paused_run_says_how_to_resume_in_python(out, capsys):
    _, _, metrics = train(TINY, out=out, pause_after=3, max_steps=10, **QUICK)
    printed = capsys.readouterr().out
    assert f"Resume with: train(out={str(out)!r}, resume=True)" in printed and "--resume" not in printed
    _, _, metrics = train(out=out, resume=True, quiet=True)
    assert metrics[-1]["step"] == 10


def test_interrupting_the_kernel_saves_and_says_how_to_resume_in_python(out, capsys, monkeypatch):
    """Interrupt Kernel sends SIGINT to the kernel's main thread, where training runs."""
    import os
    import signal

    from minitransformer.training import loop

    real_evaluate = loop.evaluate
    calls = []

    def evaluate_then_interrupt(*args):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real_evaluate(*args)

    monkeypatch.setattr(loop, "evaluate", evaluate_then_interrupt)
    with pytest.raises(KeyboardInterrupt, match="interrupted at step 10") as stop:
        train(TINY, out=out, max_steps=100, eval_interval=10, **QUICK)
    assert f"train(out={str(out)!r}, resume=True)" in str(stop.value)  # the caller can tell, and knows what to do
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [0, 10]
    printed = capsys.readouterr().out
    assert "interrupted at step 10" in printed and f"train(out={str(out)!r}, resume=True)" in printed
    assert torch.load(out / "last" / "state.pt", weights_only=True)["step"] == 10
