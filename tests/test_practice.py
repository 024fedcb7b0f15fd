"""The exercises and their checker (minitransformer/practice): the checker is tested itself, so
that it can neither pass wrong code nor fail right code, and names the mistakes it claims to."""

import copy
import itertools
import math
import shutil
import threading

import pytest
import torch

from minitransformer import GPT, practice
from minitransformer.commands.cli import main
from minitransformer.practice.exercises import EXERCISES
from minitransformer.practice.workspace import compare, load, start, stub_text
from tests.conftest import TINY, error_line, train_tiny
from tests.helpers import small_config

MISTAKES = [(name, mistake) for name, exercise in EXERCISES.items() for mistake in exercise.mistakes]
PAIRS = [(name, pair) for name, exercise in EXERCISES.items() for pair in exercise.suspects() if len(pair) == 2]


@pytest.mark.parametrize("name", list(EXERCISES))
def test_our_own_code_passes_every_exercise(name):
    report = practice.check(name, EXERCISES[name].reference)
    assert report.passed and report.mistake is None, str(report)


@pytest.mark.parametrize("name, mistake", MISTAKES, ids=[f"{n}-{m}" for n, m in MISTAKES])
def test_every_catalogued_mistake_fails_and_is_named(name, mistake):
    report = practice.check(name, EXERCISES[name].mistakes[mistake].compute)
    assert not report.passed and report.mistake == mistake, str(report)
    assert EXERCISES[name].mistakes[mistake].look_at in str(report)


def outputs_on_every_case(name, compute):
    return [compute(*copy.deepcopy(case.args)) for case in EXERCISES[name].cases()]


def identical_everywhere(name, a, b) -> bool:
    from minitransformer.practice.checker import canonical, identical

    cases = EXERCISES[name].cases()
    return all(identical(canonical(x, case.key), canonical(y, case.key)) for x, y, case in
               zip(outputs_on_every_case(name, a), outputs_on_every_case(name, b), cases))


@pytest.mark.parametrize("name", list(EXERCISES))
def test_no_two_catalogued_mistakes_agree_on_every_case(name):
    """A case separates every entry from its neighbours, so a named mistake is the right one."""
    mistakes = EXERCISES[name].mistakes
    for first, second in itertools.combinations(mistakes, 2):
        assert not identical_everywhere(name, mistakes[first].compute, mistakes[second].compute), (first, second)


@pytest.mark.parametrize("name, pair", PAIRS, ids=[f"{n}-{a}+{b}" for n, (a, b) in PAIRS])
def test_two_mistakes_at_once_fail_and_what_is_named_computes_exactly_that(name, pair):
    exercise = EXERCISES[name]
    report = practice.check(name, lambda *args: exercise.wrong(pair, args))
    assert not report.passed and report.mistakes, str(report)
    # Named as the pair itself, or as mistakes that compute exactly the same on every case.
    assert identical_everywhere(name, lambda *args: exercise.wrong(pair, args),
                                lambda *args: exercise.wrong(report.mistakes, args)), str(report)


def test_two_mistakes_at_once_are_both_named():
    both = practice.check("attention", lambda q, k, v, mask=None: EXERCISES["attention"].wrong(
        ("scale_by_D", "mask_after_softmax"), (q, k, v, mask)))
    assert both.mistakes == ("scale_by_D", "mask_after_softmax") and both.mistake == "scale_by_D + mask_after_softmax"
    assert "two mistakes at once" in str(both) and "1/D" in str(both) and "after the softmax" in str(both)


def test_the_catalogue_holds_at_least_five_mistakes_where_learners_make_the_most():
    for name in ("attention", "causal_mask", "layer_norm", "next_token_probs"):
        assert len(EXERCISES[name].mistakes) >= 5


def test_every_stub_fails_as_not_written_yet(tmp_path):
    written, kept = start(tmp_path)
    assert len(written) == len(EXERCISES) and not kept
    for name in EXERCISES:
        report = practice.check(name, load(tmp_path, name))
        assert not report.passed and report.failed == "not written yet", str(report)


def test_a_stub_is_made_from_our_signature_and_docstring():
    text = stub_text("attention")
    assert "def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None)" in text
    assert "(B, H, T, D)" in text and "raise NotImplementedError" in text


# Correct implementations written differently from ours: each must pass.
def softmax_by_hand(x, dim=-1):
    e = (x - x.amax(dim, keepdim=True)).exp()
    return e / e.sum(dim, keepdim=True)


def attention_with_einsum(q, k, v, mask=None):
    scores = torch.einsum("bhtd,bhsd->bhts", q, k) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = torch.where(mask, scores, torch.tensor(float("-inf")))
    weights = softmax_by_hand(scores)
    return torch.einsum("bhts,bhsd->bhtd", weights, v), weights


def causal_mask_by_comparison(T, past=0):
    return torch.arange(past + T)[None, :] <= (past + torch.arange(T))[:, None]


def layer_norm_by_hand(x, weight, bias, eps=1e-5):
    centred = x - x.mean(-1, keepdim=True)
    return centred / torch.sqrt((centred**2).mean(-1, keepdim=True) + eps) * weight + bias


def cross_entropy_by_logsumexp(logits, targets):
    return (torch.logsumexp(logits, -1) - logits.gather(-1, targets[:, None])[:, 0]).mean()


def merge_pair_by_skipping(ids, pair, new_id):
    out, skip = [], False
    for first, second in zip(ids, [*ids[1:], None]):
        if skip:
            skip = False
        elif (first, second) == pair:
            out.append(new_id)
            skip = True
        else:
            out.append(first)
    return out


def gelu_by_hand(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


ALTERNATIVES = {"softmax": softmax_by_hand, "attention": attention_with_einsum, "causal_mask": causal_mask_by_comparison,
                "layer_norm": layer_norm_by_hand, "cross_entropy": cross_entropy_by_logsumexp,
                "merge_pair": merge_pair_by_skipping, "gelu": gelu_by_hand,
                "split_heads": lambda x, n_head: x.unflatten(-1, (n_head, -1)).permute(0, 2, 1, 3),
                "merge_heads": lambda x: x.permute(0, 2, 1, 3).flatten(-2),
                "kv_cache_update": lambda pk, pv, k, v: (torch.cat([pk, k], -2), torch.cat([pv, v], -2)),
                "cache_positions": lambda past, T: past + torch.arange(T)}


@pytest.mark.parametrize("name", list(ALTERNATIVES))
def test_correct_code_written_another_way_passes(name):
    report = practice.check(name, ALTERNATIVES[name])
    assert report.passed, str(report)


def test_a_mistake_outside_the_catalogue_fails_with_the_property_named():
    doubled = practice.check("attention", lambda q, k, v, mask=None: tuple(t * 2 for t in attention_with_einsum(q, k, v, mask)))
    assert not doubled.passed and doubled.mistake is None and doubled.failed == "rows sum to 1"
    off = practice.check("attention", lambda q, k, v, mask=None: (attention_with_einsum(q, k, v, mask)[0] + 0.01,
                                                                   attention_with_einsum(q, k, v, mask)[1]))
    assert off.failed.startswith("values: ") and "first difference" in str(off) and off.mistake is None

    def in_place(x, dim=-1):
        x -= x.amax(dim, keepdim=True)
        return softmax_by_hand(x, dim)

    assert practice.check("softmax", in_place).failed == "inputs unchanged"

    def peeks_at_the_last_key(q, k, v, mask=None):
        out, weights = attention_with_einsum(q, k, v, mask)
        return out + v[..., -1:, :].sum(-1, keepdim=True) * 0.1, weights

    assert practice.check("attention", peeks_at_the_last_key).failed == "causality"
    wrong_shape = practice.check("split_heads", lambda x, n_head: x)
    assert wrong_shape.failed == "shape" and "(1, 4, 4)" in str(wrong_shape)


def test_an_exception_in_her_code_shows_her_traceback_not_ours(tmp_path):
    (tmp_path / "softmax.py").write_text("def softmax(x, dim=-1):\n    return x / 0 + undefined_name\n")
    report = practice.check("softmax", load(tmp_path, "softmax"))
    assert report.failed == "runs" and "NameError" in report.details and "softmax.py" in report.details
    assert "minitransformer/practice" not in report.details and "checker.py" not in report.details


def test_the_report_reads_in_plain_words_and_in_jupyter():
    report = practice.check("layer_norm", EXERCISES["layer_norm"].mistakes["eps_outside_sqrt"].compute)
    text = str(report)
    assert text.startswith("layer_norm: FAILED (values: small variance (where eps sits))")
    assert "eps outside the square root" in text and "yours" in text and "ours" in text
    assert "<pre>" in report._repr_html_() and "FAILED" in report._repr_html_()
    assert str(practice.check("layer_norm", layer_norm_by_hand)).startswith("layer_norm: passed")


def test_use_puts_her_pieces_into_every_gpt_and_restores_the_model():
    model = GPT(small_config(attention="sdpa", position="rope"))
    idx = torch.randint(0, 37, (2, 9))
    before = model(idx)[0]
    calls = []

    def counting(q, k, v, mask=None):
        calls.append(q.shape)
        return attention_with_einsum(q, k, v, mask)

    with practice.use(attention=counting, layer_norm=layer_norm_by_hand, gelu=gelu_by_hand):
        inside = model(idx)[0]
        fresh = GPT(small_config())  # made inside the block: it takes her pieces too
        fresh(idx)
    assert len(calls) == 2 * model.config.n_layer  # every layer of both models, on the written-out path
    torch.testing.assert_close(inside, before, atol=1e-5, rtol=1e-5)
    assert torch.equal(model(idx)[0], before) and len(calls) == 4
    with pytest.raises(Exception, match="takes attention"):
        practice.use(atention=counting)  # refused at once, before any block
    with pytest.raises(Exception, match="takes a function"):
        practice.use(gelu=3.0)


def test_use_nests_restores_after_an_exception_and_reaches_only_our_models_in_this_thread():
    from minitransformer import pieces

    model = GPT(small_config())
    idx = torch.randint(0, 37, (1, 5))
    seen = []

    def my_gelu(x):
        seen.append("gelu")
        return gelu_by_hand(x)

    def my_norm(x, w, b, eps=1e-5):
        seen.append("norm")
        return layer_norm_by_hand(x, w, b, eps)

    with practice.use(gelu=my_gelu):
        with practice.use(layer_norm=my_norm):  # the inner block keeps the outer piece
            model(idx)
            assert set(seen) == {"gelu", "norm"} and set(pieces.chosen()) == {"gelu", "layer_norm"}
            seen.clear()
            torch.nn.LayerNorm(4)(torch.randn(2, 4))  # not a GPT's: untouched
            assert seen == []
            other = []
            thread = threading.Thread(target=lambda: other.append(pieces.chosen()))
            thread.start()
            thread.join()
            assert other == [{}]  # another thread computes with ours
        assert set(pieces.chosen()) == {"gelu"}
        with pytest.raises(RuntimeError):
            with practice.use(layer_norm=my_norm):
                raise RuntimeError("inside")
        assert set(pieces.chosen()) == {"gelu"}
    assert pieces.chosen() == {}


def test_use_never_reaches_the_checkers_references():
    """Inside use(gelu=relu), the MLP check still compares with GPT-2's tanh GELU."""
    correct = lambda x, c_fc, c_proj: c_proj(gelu_by_hand(c_fc(x)))  # noqa: E731
    with practice.use(gelu=torch.relu):
        assert practice.check("mlp", correct).passed
        relu_mlp = practice.check("mlp", lambda x, c_fc, c_proj: c_proj(torch.relu(c_fc(x))))
        assert not relu_mlp.passed and relu_mlp.mistake == "relu"
        assert practice.check("gelu", gelu_by_hand).passed


def test_correct_pieces_inside_the_shipped_model_give_our_loss_and_text():
    result = compare({"attention": attention_with_einsum, "layer_norm": layer_norm_by_hand, "gelu": gelu_by_hand,
                      "split_heads": ALTERNATIVES["split_heads"], "merge_heads": ALTERNATIVES["merge_heads"],
                      "cross_entropy": cross_entropy_by_logsumexp}, tokens=40)
    assert result.passed and result.parting is None and result.ours_text == result.hers_text, str(result)
    assert abs(result.ours_loss - result.hers_loss) < 1e-4 and result.ours_loss < 1.6  # trained: far below 4.17
    with practice.use(gelu=gelu_by_hand):  # the same verdict from Python, with the pieces in force
        assert practice.compare(tokens=10).passed


def test_a_wrong_piece_in_the_shipped_model_is_found_where_it_parts():
    result = compare({"gelu": EXERCISES["gelu"].mistakes["exact_erf"].compute}, tokens=10)
    assert result.parting.startswith("blocks.0.mlp.hidden") and not result.passed


def test_a_summed_cross_entropy_is_a_failed_verdict_though_every_activation_agrees():
    summed = EXERCISES["cross_entropy"].mistakes["sum_not_mean"].compute
    result = compare({"cross_entropy": summed}, tokens=10)
    assert result.parting is None and not result.same_loss and not result.passed
    assert "another loss" in str(result) and "every activation agrees" not in str(result).splitlines()[-1][:20]


def test_nan_from_her_piece_is_blamed_on_that_piece():
    def broken_norm(x, w, b, eps=1e-5):
        return layer_norm_by_hand(x, w, b, eps) / 0 * 0  # NaN everywhere

    result = compare({"layer_norm": broken_norm}, tokens=5)
    assert not result.passed and result.blamed == ("layer_norm (test_nan_from_her_piece_is_blamed_on_that_piece."
                                                   "<locals>.broken_norm from Python)",)
    assert "returned NaN or inf from finite inputs" in str(result) and "weights" not in str(result)


def test_the_practice_commands(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["practice", "start"]) == 0
    mine = tmp_path / "practice" / "softmax.py"
    mine.write_text("import torch\n\ndef softmax(x, dim=-1):\n    e = (x - x.amax(dim, keepdim=True)).exp()\n"
                    "    return e / e.sum(dim, keepdim=True)\n")
    assert main(["practice", "start"]) == 0 and "wrote 0 stub(s)" in capsys.readouterr().out
    assert "amax" in mine.read_text()  # never overwritten
    assert main(["practice", "check", "softmax"]) == 0
    assert main(["practice", "check", "softmax", "attention"]) == 1
    assert "attention: FAILED (not written yet)" in capsys.readouterr().out
    assert main(["practice"]) == 0 and f"1 of {len(EXERCISES)} passed" in capsys.readouterr().out
    first = main(["practice", "hint", "attention"]) == 0 and capsys.readouterr().out
    second = main(["practice", "hint", "attention"]) == 0 and capsys.readouterr().out
    assert "hint 1 of" in first and "hint 2 of" in second
    assert main(["practice", "solution", "attention"]) == 0 and "def scaled_dot_product_attention" in capsys.readouterr().out
    assert main(["practice", "check", "atention"]) == 2 and "no exercise named 'atention'" in error_line(capsys)
    (tmp_path / "practice" / "gelu.py").write_text("def gelu(x):\n    return x *\n")
    assert main(["practice", "check", "gelu"]) == 1
    out = capsys.readouterr().out
    assert "SyntaxError" in out and "gelu.py" in out and "Traceback" not in out


def test_train_with_her_pieces_says_where_its_dropout_masks_come_from(run_dir, tmp_path, capsys):
    """train --practice never compiles (the compiler would trace ours in place of hers), so on a
    CPU the masks come from numpy even when the config asks to compile: the first lines say so."""
    start(tmp_path / "mine")
    (tmp_path / "mine" / "gelu.py").write_text("import torch\n\ndef gelu(x):\n    return torch.nn.functional.gelu(x)\n")
    assert train_tiny(run_dir, "--set", "train.compile=true", "--set", "model.dropout=0.1", "--set",
                      "train.max_steps=2", "--practice", str(tmp_path / "mine")) == 0
    assert "dropout 0.1 (masks from numpy's SFC64, seeded by torch)" in capsys.readouterr().out


def test_train_with_her_pieces_follows_our_curve(run_dir, tmp_path, capsys):
    start(tmp_path / "mine")
    (tmp_path / "mine" / "attention.py").write_text(
        "import math, torch\n\ndef attention(q, k, v, mask=None):\n"
        "    s = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])\n"
        "    s = s.masked_fill(~mask, float('-inf')) if mask is not None else s\n"
        "    w = s.softmax(-1)\n    return w @ v, w\n")
    curves = []
    for extra in ([], ["--practice", str(tmp_path / "mine")]):
        out = run_dir.parent / f"run{len(curves)}"
        shutil.copytree(run_dir / "data", out / "data")
        assert main(["train", "--config", TINY, "--out", str(out), "--set", "train.max_steps=10", "--set",
                     "train.eval_interval=5", "--set", "train.sample_tokens=0", "--set", "train.eval_batches=2", *extra]) == 0
        curves.append([line for line in (out / "metrics.jsonl").read_text().splitlines()])
    assert "your pieces: attention" in capsys.readouterr().out
    losses = [[float(row.split('"val_loss": ')[1].split(",")[0]) for row in curve] for curve in curves]
    assert losses[0] == pytest.approx(losses[1], abs=1e-4)
