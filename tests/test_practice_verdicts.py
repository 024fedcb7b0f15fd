"""The practice checker's verdicts can be trusted: her code runs apart from ours and from her
session, every property is checked for every type, every option of a contract has a case that
separates it, and the messages are in her terms."""

import math
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minitransformer import practice
from minitransformer.commands.cli import main
from minitransformer.practice.exercises import EXERCISES
from minitransformer.practice.workspace import HINTS_FILE, start
from tests.conftest import error_line
from tests.helpers import HANG_S, wait_until

ROOT = Path(__file__).parent.parent


def softmax_by_hand(x, dim=-1):
    e = (x - x.amax(dim, keepdim=True)).exp()
    return e / e.sum(dim, keepdim=True)


def attention_right(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(-1)
    return weights @ v, weights


def write(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(body)
    return path


# ---------------------------------------------------------------- her code apart from ours
@pytest.mark.parametrize("ending", ["sys.exit()", "exit(3)", "raise KeyboardInterrupt", "raise SystemExit('bye')"])
def test_her_function_ending_the_program_is_a_failed_runs_with_her_traceback(ending):
    namespace = {}
    exec(f"import sys\ndef softmax(x, dim=-1):\n    {ending}\n", namespace)
    report = practice.check("softmax", namespace["softmax"])
    assert not report.passed and report.failed == "runs" and "in your code" in report.details, str(report)


@pytest.mark.parametrize("ending", ["sys.exit()", "exit(0)", "raise KeyboardInterrupt"])
def test_her_file_ending_the_program_fails_the_check_with_exit_1(tmp_path, capsys, ending):
    write(tmp_path, "softmax", f"import sys\n{ending}\n\ndef softmax(x, dim=-1):\n    return x\n")
    assert main(["practice", "check", "softmax", "--dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "softmax: FAILED (runs)" in out and "softmax.py" in out and "0 of 1 passed" in out


def test_her_file_replacing_torch_functions_is_refused_and_put_back(tmp_path, capsys):
    softmax, layer_norm, dtype = torch.softmax, F.layer_norm, torch.get_default_dtype()
    write(tmp_path, "softmax", "import torch, torch.nn.functional as F, os\ntorch.softmax = lambda x, dim=-1: x\n"
          "F.layer_norm = lambda *a, **k: 0\ntorch.set_default_dtype(torch.float64)\n\n"
          "def softmax(x, dim=-1):\n    return torch.softmax(x, dim)\n")
    assert main(["practice", "check", "softmax", "--dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "replaced torch.softmax" in out and "F.layer_norm" in out and "float64" in out
    assert torch.softmax is softmax and F.layer_norm is layer_norm and torch.get_default_dtype() == dtype
    assert practice.check("layer_norm", lambda x, w, b, eps=1e-5: F.layer_norm(x, x.shape[-1:], w, b, eps)).passed


def test_her_function_replacing_a_torch_function_fails_and_ours_is_unchanged():
    def sneaky(x, dim=-1):
        torch.softmax = lambda y, dim=-1: y  # every later check would compare against this
        return softmax_by_hand(x, dim)

    original = torch.softmax
    report = practice.check("softmax", sneaky)
    assert report.failed == "leaves the session alone" and "replaced torch.softmax" in str(report)
    assert torch.softmax is original and practice.check("softmax", softmax_by_hand).passed


def test_a_check_leaves_her_random_state_print_options_folder_and_dtype_exactly_as_they_were(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.set_printoptions(precision=7)
    np.set_printoptions(precision=3)
    random.seed(5)
    np.random.seed(6)
    state = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())

    def noisy(x, ln_1, attn, ln_2, mlp):
        torch.manual_seed(0)
        os.chdir("/")
        torch.set_printoptions(precision=1)
        random.random()
        return x + attn(ln_1(x)) + mlp(ln_2(x + attn(ln_1(x))))

    try:
        for name, fn in (("block", noisy), ("mlp", lambda x, c_fc, c_proj: c_proj(torch.relu(c_fc(x)))),
                         ("layer_norm", lambda x, w, b, eps=1e-5: x)):  # failing checks too
            practice.check(name, fn)
            assert torch.equal(torch.get_rng_state(), state[0]) and random.getstate() == state[1]
            assert np.array_equal(np.random.get_state()[1], state[2])
            assert torch._tensor_str.PRINT_OPTS.precision == 7 and np.get_printoptions()["precision"] == 3
            assert Path.cwd() == tmp_path and torch.get_default_dtype() == torch.float32
    finally:
        torch.set_printoptions(profile="default")
        np.set_printoptions(precision=8)


def test_her_session_with_float64_by_default_is_checked_as_designed_and_given_back():
    torch.set_default_dtype(torch.float64)
    try:
        assert practice.check("softmax", softmax_by_hand).passed
        assert torch.get_default_dtype() == torch.float64
    finally:
        torch.set_default_dtype(torch.float32)


def test_a_torch_function_she_replaced_before_the_check_is_not_what_ours_uses():
    original = torch.softmax
    torch.softmax = lambda x, dim=-1: x * 0  # her notebook's earlier cell
    try:
        report = practice.check("softmax", softmax_by_hand)
        assert report.passed and "not torch's own" in str(report)
        assert torch.softmax is not original  # her session is hers again
    finally:
        torch.softmax = original


def test_one_ctrl_c_stops_a_check_stuck_in_her_loop():
    def forever(x, dim=-1):
        while True:
            pass

    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        practice.check("softmax", forever)
    timer.join()


def test_one_ctrl_c_stops_the_command_line_check_with_one_line(tmp_path):
    looping = tmp_path / "looping"
    write(tmp_path, "softmax", f"from pathlib import Path\n\ndef softmax(x, dim=-1):\n    Path({str(looping)!r}).touch()\n"
          "    while True:\n        pass\n")
    process = subprocess.Popen([sys.executable, "-m", "minitransformer", "practice", "check", "softmax", "--dir",
                                str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    wait_until(looping.exists, process)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=HANG_S)
    assert process.returncode == 130 and err.strip() == "interrupted (Ctrl-C or SIGTERM)", err


# ---------------------------------------------------------------- every property, every type
def test_outputs_are_checked_against_the_contracts_types():
    as_list = practice.check("attention", lambda q, k, v, mask=None: list(attention_right(q, k, v, mask)))
    assert as_list.failed == "type" and "is a list of 2" in str(as_list) and "the contract is a tuple" in str(as_list)
    tensor_ids = practice.check("merge_pair", lambda ids, pair, new_id: torch.tensor(ids))
    assert tensor_ids.failed == "type" and "list of Python ints" in str(tensor_ids)
    numpy_ids = practice.check("merge_pair", lambda ids, pair, new_id: [np.int64(i) for i in ids])
    assert numpy_ids.failed == "type" and "int64" in str(numpy_ids)
    meta = practice.check("gelu", lambda x: torch.empty_like(x, device="meta"))
    assert meta.failed == "device" and "meta" in str(meta)
    sparse = practice.check("gelu", lambda x: F.gelu(x, approximate="tanh").to_sparse())
    assert sparse.failed == "type" and "sparse" in str(sparse)
    assert practice.check("gelu", lambda x: x.numpy()).failed == "type"
    assert practice.check("gelu", lambda x: None).failed == "type"
    assert practice.check("attention", lambda q, k, v, mask=None: attention_right(q, k, v, mask)[0]).failed == "type"


def test_inputs_unchanged_covers_lists_and_the_weights_of_modules_she_is_given():
    def edits_ids(ids, pair, new_id):
        from minitransformer.bpe import merge_pair
        result = merge_pair(ids, pair, new_id)
        ids.clear()
        return result

    report = practice.check("merge_pair", edits_ids)
    assert report.failed == "inputs unchanged" and "`ids`" in str(report)

    def zeroes_weights(x, c_fc, c_proj):
        out = c_proj(F.gelu(c_fc(x), approximate="tanh"))
        with torch.no_grad():
            c_fc.weight.zero_()
        return out

    report = practice.check("mlp", zeroes_weights)
    assert report.failed == "inputs unchanged" and "c_fc" in str(report) and "weight" in str(report)


def test_an_exception_on_any_call_shows_her_traceback():
    calls = []

    def fails_the_second_time(x, dim=-1):
        calls.append(1)
        if len(calls) > 1:
            raise ValueError("second call")
        return softmax_by_hand(x, dim)

    report = practice.check("softmax", fails_the_second_time)
    assert report.failed == "runs" and "ValueError: second call" in str(report) and "checker.py" not in str(report)


def test_a_non_function_is_one_clear_failure():
    report = practice.check("softmax", 3)
    assert not report.passed and "not a function" in str(report)


# ---------------------------------------------------------------- cases that separate every option
def sampling(order_k_first=True, temperature_first=True, exactly_k=False, strict=False):
    def next_token_probs(logits, temperature=1.0, top_k=None, top_p=None):
        logits = logits / temperature if temperature_first else logits

        def k_filter(values, fill):
            if top_k is None:
                return values
            if exactly_k:
                kept = torch.topk(values, top_k, -1)
                return torch.full_like(values, fill).scatter(-1, kept.indices, kept.values)
            return values.masked_fill(values < torch.topk(values, top_k, -1).values[:, -1:], fill)

        def p_filter(probs):
            if top_p is None:
                return probs
            p, order = probs.sort(-1, descending=True)
            before = p.cumsum(-1) - p
            drop = before > top_p if strict else before >= top_p
            drop[:, 0] = False
            return torch.zeros_like(probs).scatter(-1, order, p.masked_fill(drop, 0.0))

        if order_k_first:
            probs = p_filter(torch.softmax(k_filter(logits, float("-inf")), -1))
        else:
            probs = k_filter(p_filter(torch.softmax(logits, -1)), 0.0)
            probs = probs / probs.sum(-1, keepdim=True)
        if not temperature_first:
            probs = torch.softmax(probs.log() / temperature, -1)
        return probs

    return next_token_probs


def test_sampling_cases_separate_every_option():
    assert practice.check("next_token_probs", sampling()).passed
    assert not practice.check("next_token_probs", sampling(order_k_first=False)).passed  # top-p before top-k
    assert not practice.check("next_token_probs", sampling(temperature_first=False)).passed
    exactly = practice.check("next_token_probs", sampling(exactly_k=True))
    assert not exactly.passed and "tied tokens all stay" in str(exactly)
    assert practice.check("next_token_probs", sampling(strict=True)).mistake == "top_p_strict"


def test_layer_norm_by_e_x2_minus_e2x_fails_at_a_large_shared_offset():
    def one_pass(x, w, b, eps=1e-5):
        mean = x.mean(-1, keepdim=True)
        var = (x ** 2).mean(-1, keepdim=True) - mean ** 2
        return (x - mean) / torch.sqrt(var + eps) * w + b

    report = practice.check("layer_norm", one_pass)
    assert report.failed.startswith("values: a large offset") and report.mistake == "one_pass_variance", str(report)


def test_merge_pair_by_string_replacement_fails():
    def by_text(ids, pair, new_id):
        text = " ".join(map(str, ids)).replace(f"{pair[0]} {pair[1]}", str(new_id))
        return [int(t) for t in text.split()]

    report = practice.check("merge_pair", by_text)
    assert not report.passed and report.failed.startswith("values: multi-digit")
    assert "[112, 3, 256, 45, 256, 7, 1, 23, 256]" in str(report)  # ours, as a list


def test_a_mask_filled_with_minus_1e9_fails_and_the_lowest_finite_value_passes():
    def filled(value):
        def attention(q, k, v, mask=None):
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
            if mask is not None:
                scores = scores.masked_fill(~mask, value if value is not None else torch.finfo(scores.dtype).min)
            weights = scores.softmax(-1)
            return weights @ v, weights
        return attention

    assert practice.check("attention", filled(-1e9)).mistake == "finite_mask_1e9"
    assert practice.check("attention", filled(None)).passed


def test_a_constant_wrong_in_its_third_significant_figure_fails():
    for coefficient in (0.0448, 0.0446):
        wrong = practice.check("gelu", lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + coefficient * x ** 3))))
        assert not wrong.passed, coefficient


def test_partial_variants_are_named():
    assert practice.check("softmax", lambda x, dim=-1: softmax_by_hand(x, -1)).mistake == "ignores_dim"
    no_mlp_residual = practice.check("block", lambda x, ln_1, attn, ln_2, mlp: (lambda h: mlp(ln_2(h)))(x + attn(ln_1(x))))
    assert no_mlp_residual.mistake == "no_mlp_residual"
    missed_end = practice.check("merge_pair", lambda ids, pair, new_id: merge_missing_the_end(ids, pair, new_id))
    assert missed_end.mistake == "misses_the_last_pair"


def merge_missing_the_end(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids) - 1:  # the last id is dropped from the walk, then added back unmerged
        if (ids[i], ids[i + 1]) == pair and i + 2 < len(ids):
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out + ids[i:]


# ---------------------------------------------------------------- messages in her terms
def test_messages_show_lists_masks_and_the_failing_call():
    merge = practice.check("merge_pair", lambda ids, pair, new_id: list(ids))
    assert "merge_pair([1, 2, 3, 1, 2], (1, 2), 7)" in str(merge) and "ours  [7, 3, 7]" in str(merge)
    assert "float64" not in str(merge)
    mask = practice.check("causal_mask", lambda T, past=0: torch.ones(T, past + T, dtype=torch.bool))
    assert "[True, True, True, True]" in str(mask) and "[True, False, False, False]" in str(mask)


# ---------------------------------------------------------------- hints
def test_the_first_hint_is_the_one_for_what_fails(tmp_path, capsys):
    write(tmp_path, "attention", "import math, torch\n\ndef attention(q, k, v, mask=None):\n"
          "    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])\n"
          "    w = s.softmax(-1)\n    return w @ v, w\n")  # the mask forgotten
    assert main(["practice", "hint", "attention", "--dir", str(tmp_path)]) == 0
    assert "scores = scores.masked_fill" in capsys.readouterr().out
    write(tmp_path, "layer_norm", "import torch\n\ndef layer_norm(x, weight, bias, eps=1e-5):\n"
          "    m = x.mean(-1, keepdim=True)\n    return (x - m) / torch.sqrt(x.var(-1, keepdim=True) + eps) * weight + bias\n")
    assert main(["practice", "hint", "layer_norm", "--dir", str(tmp_path)]) == 0
    assert "unbiased=False" in capsys.readouterr().out


def test_a_hints_file_that_is_not_ours_is_left_as_it_is(tmp_path, capsys):
    start(tmp_path)
    mine = tmp_path / HINTS_FILE
    for text in ("{not json", '{"attention": 1}', "[1, 2]"):
        mine.write_text(text)
        assert main(["practice", "hint", "attention", "--dir", str(tmp_path)]) == 0
        out = capsys.readouterr().out
        assert "is not a hints record written by minitransformer" in out and "hint 1 of" in out
        assert mine.read_text() == text


# ---------------------------------------------------------------- her files and the arguments
def test_start_never_replaces_a_file_created_while_it_runs(tmp_path, monkeypatch):
    real_link = os.link

    def raced(source, target, *args, **kwargs):  # her editor saves the file just before ours lands
        Path(target).write_text("# mine\n")
        return real_link(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "link", raced)
    written, kept = start(tmp_path)
    assert not written and len(kept) == len(EXERCISES)
    assert all(path.read_text() == "# mine\n" for path in kept)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".mt-tmp")]


@pytest.mark.parametrize("argv, words", [
    (["practice", "start", "a", "b"], "takes one folder"),
    (["practice", "start", "a", "--dir", "b"], "takes one folder"),
    (["practice", "--dir", ""], "names no folder"),
    (["practice", "start", "--dir", ""], "names no folder"),
    (["practice", "run", "attention"], "takes no names"),
    (["practice", "hint"], "takes one exercise name"),
    (["train", "--practice", ""], "names no folder"),
])
def test_practice_arguments_are_strict(tmp_path, monkeypatch, capsys, argv, words):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2 and words in error_line(capsys)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- verdicts from the command line
def test_practice_run_exits_1_when_the_loss_parts_though_the_activations_agree(tmp_path, capsys):
    write(tmp_path, "cross_entropy", "import torch\n\ndef cross_entropy(logits, targets):\n"
          "    return (torch.logsumexp(logits, -1) - logits[torch.arange(len(targets)), targets]).sum()\n")
    assert main(["practice", "run", "--dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "FAILED: another loss" in out and "every activation agrees with ours: the same loss" not in out
    write(tmp_path, "cross_entropy", "import torch\n\ndef cross_entropy(logits, targets):\n"
          "    return (torch.logsumexp(logits, -1) - logits[torch.arange(len(targets)), targets]).mean()\n")
    assert main(["practice", "run", "--dir", str(tmp_path)]) == 0
    assert "passed: the same loss, the same text" in capsys.readouterr().out


def test_practice_run_with_a_piece_that_raises_shows_her_traceback_and_exits_1(tmp_path, capsys):
    write(tmp_path, "gelu", "def gelu(x):\n    if x.shape[-1] > 100:\n        raise ValueError('too wide')\n    return x\n")
    assert main(["practice", "run", "--dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "your gelu" in out and "ValueError: too wide" in out and "gelu.py" in out


# ---------------------------------------------------------------- train --practice
def tiny_train(run_dir, *extra):
    return main(["train", "--config", str(ROOT / "configs" / "tiny.toml"), "--out", str(run_dir), "--set",
                 "train.max_steps=6", "--set", "train.eval_interval=3", "--set", "train.sample_tokens=0", "--set",
                 "train.eval_batches=1", *extra])


def test_train_with_a_broken_piece_is_her_traceback_and_exit_1(run_dir, tmp_path, capsys):
    write(tmp_path / "mine", "gelu", "import math, torch\n\ndef gelu(x):\n    if x.numel() > 1000:  # only inside a model\n"
          "        raise RuntimeError('my bug')\n"
          "    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))\n")
    assert tiny_train(run_dir, "--practice", str(tmp_path / "mine")) == 1
    err = capsys.readouterr().err
    assert "FAILED: your gelu" in err and "RuntimeError: my bug" in err and "gelu.py" in err
    assert len(err.strip().splitlines()) < 10 and "loop.py" not in err


def test_train_with_a_piece_that_makes_nan_blames_that_piece(run_dir, tmp_path, capsys):
    write(tmp_path / "mine", "gelu", "import math, torch\n\ndef gelu(x):\n"
          "    y = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))\n"
          "    return y * float('nan') if x.numel() > 1000 else y  # NaN only inside a model\n")
    assert tiny_train(run_dir, "--practice", str(tmp_path / "mine")) == 2
    err = error_line(capsys)
    assert "your gelu" in err and "NaN or inf" in err and "learning rate" not in err


def test_a_checkpoint_trained_with_her_pieces_says_so_on_sampling_and_resuming(run_dir, tmp_path, capsys):
    write(tmp_path / "mine", "gelu", "import math, torch\n\ndef gelu(x):\n"
          "    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))\n")
    assert tiny_train(run_dir, "--practice", str(tmp_path / "mine"), "--pause-after", "3") == 0
    assert "your pieces: gelu" in capsys.readouterr().out
    assert main(["sample", "--checkpoint", str(run_dir), "--max-new-tokens", "5"]) == 0
    err = capsys.readouterr().err
    assert "trained with your pieces (gelu from" in err and "sampling computes with ours" in err
    assert tiny_train(run_dir, "--resume") == 0
    captured = capsys.readouterr()
    assert "resuming computes with ours (give --practice DIR to use yours)" in captured.out + captured.err
