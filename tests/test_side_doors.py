"""Side doors held to the front door's rules: each case here once crashed, wrote nonsense or did
something silently (a hostile battery's and a review's findings), and is now one line, or right."""

import json
import subprocess
import sys

import pytest

from minitransformer.commands.cli import main
from minitransformer.commands.plot import text_chart
from minitransformer.explorer import page
from minitransformer.machine import device
from tests.conftest import QUICK, ROOT, error_line


def test_the_explorer_fills_its_template_in_one_pass():
    """A prompt holding "DATA" stays in the title; the payload goes only where the template says."""
    html = page({"payload_marker": 1}, "my DATA and TITLE")
    title = html.split("<title>", 1)[1].split("</title>", 1)[0]
    assert title == "minitransformer: my DATA and TITLE"
    assert html.count("payload_marker") == 1


def test_the_text_chart_draws_any_finite_losses():
    chart = text_chart([{"step": 0, "train_loss": 1e308, "val_loss": -1e308}, {"step": 5, "train_loss": 2.0, "val_loss": 2.5}])
    assert "1e+308" in chart and "best val -1e+308 at step 0" in chart


@pytest.mark.parametrize("xdg", ["", "relative/cache"])
def test_an_empty_or_relative_xdg_cache_home_is_ignored(monkeypatch, tmp_path, xdg):
    monkeypatch.setenv("XDG_CACHE_HOME", xdg)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert device.speed_cache_path() == tmp_path / ".cache" / "minitransformer" / "speed.json"


def test_without_a_home_nothing_is_remembered_and_nothing_fails(monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(device.Path, "home", lambda: (_ for _ in ()).throw(RuntimeError("no home")))
    assert device.speed_cache_path() is None
    device.remember("k", 1.0)
    assert device.read_cache() == {}


def test_a_damaged_peak_in_the_cache_is_measured_again_and_metrics_stay_json(tiny_run, tmp_path, monkeypatch):
    """A remembered peak of 1e-320 FLOP/s would make MFU infinite, and `Infinity` is not JSON."""
    import shutil

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    key = f"{device.machine_key(device.torch.device('cpu'))}; matmul peak float32"
    device.remember(key, 1e-320)
    assert device.matmul_peak(device.torch.float32, device.torch.device("cpu")) >= device.MIN_PEAK
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    device.remember(key, 1e-320)
    assert main(["train", "--out", str(run), "--resume", "--set", "train.max_steps=60"]) == 0
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in metrics.jsonl"))
        assert "mfu" not in row or 0 < row["mfu"] < 1


def test_text_arguments_that_are_not_utf8_are_read_with_a_replacement_character(tiny_run, tmp_path, capsys):
    assert main(["tokenize", "gpt2", "abc\udcff", "--merges"]) == 0
    assert "\ufffd" in capsys.readouterr().out
    # A character-level model has no such character: one line, not an encoding traceback.
    assert main(["inspect", "--checkpoint", str(tiny_run), "--prompt", "RO\udcffMEO", "--html", str(tmp_path / "p.html")]) == 2
    assert "outside this character-level vocabulary" in error_line(capsys)


def test_the_command_line_starts_without_importing_pytorch():
    """Ctrl-C while PyTorch imports (seconds on a slow laptop) must reach main's one-line handler:
    importing the command line itself imports no PyTorch."""
    code = "import sys; import minitransformer.commands.cli; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          check=True).stdout.strip() == "False"
    code = "from minitransformer import generate, GPT, train; print(callable(generate) and callable(train), GPT.__name__)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          check=True).stdout.strip() == "True GPT"


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_tokens_drawn_from_nan_scores_are_refused_at_the_end(temperature):
    import torch

    from minitransformer import GPT, generate
    from minitransformer.errors import UserError
    from minitransformer.generate import generate_batch
    from tests.helpers import small_config

    model = GPT(small_config())
    with torch.no_grad():
        model.lm_head.weight.fill_(float("nan")) if hasattr(model, "lm_head") else model.wte.weight.fill_(float("nan"))
    with pytest.raises(UserError, match="not finite"):
        generate(model, torch.tensor([[1, 2]]), 4, temperature=temperature)
    with pytest.raises(UserError, match="not finite"):
        generate_batch(model, [[1, 2], [3]], 4, temperature=temperature)


@pytest.mark.parametrize("change", [{"specials": {"<|endoftext|>": "x", "b": 1}}, {"pattern": ""},
                                    {"pattern": "(a+)+$"}, {"pattern": "(["}, {"specials": ["<|endoftext|>"]}],
                         ids=["specials-types", "empty-pattern", "pattern-drops-text", "bad-pattern", "specials-list"])
def test_a_damaged_tokenizer_description_is_one_line_wherever_it_is_loaded(tmp_path, capsys, change):
    """One check of a BPE description (types; a pattern tiktoken can run that covers a probe text)
    serves every loader: `tokenize` on a tokenizer.json here."""
    from minitransformer.bpe import BPETokenizer

    description = {**BPETokenizer.train("To be, or not to be, that is the question. " * 20, 280).describe(), **change}
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(description))
    assert main(["tokenize", str(path), "To be, or not to be"]) == 2
    assert "is not a tokenizer.json of ours" in error_line(capsys)


def test_a_checkpoint_whose_tokenizer_is_not_its_own_is_refused_before_tiktoken_is_asked(tiny_run, tmp_path, capsys,
                                                                                        monkeypatch):
    """A tokenizer.json naming o200k_base beside weights trained with characters: the digest check
    refuses it before tiktoken would try the network."""
    import shutil

    from minitransformer import tokenizer as tokenizer_module

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "best" / "tokenizer.json").write_text(json.dumps({"kind": "tiktoken", "name": "o200k_base"}))
    monkeypatch.setattr(tokenizer_module, "tiktoken_encoding", lambda name: pytest.fail("tiktoken was asked"))
    assert main(["sample", "--checkpoint", str(run), "--max-new-tokens", "3"]) == 2
    assert "does not belong to the weights" in error_line(capsys)


@pytest.mark.parametrize("flags", [["--ablate", "0.1", "--html", "x.html"], ["--lens", "--html", "x.html"],
                                   ["--break", "0.1", "--html", "x.html"], ["--lens", "--layer", "9"],
                                   ["--html", "x.html", "--layer", "0", "--head", "9"], ["--ablate", "0.1", "--png", "a.png"]])
def test_inspect_refuses_flags_that_would_silently_exclude_each_other(tiny_run, tmp_path, capsys, monkeypatch, flags):
    monkeypatch.chdir(tmp_path)
    assert main(["inspect", "--checkpoint", str(tiny_run), "--prompt", "RO", *flags]) == 2
    err = error_line(capsys)
    assert flags[0] in err and not list(tmp_path.iterdir())  # nothing written


def test_inspect_checks_layer_and_head_in_the_heatmap_mode(tiny_run, capsys):
    assert main(["inspect", "--checkpoint", str(tiny_run), "--prompt", "RO", "--layer", "9"]) == 2
    assert "--layer 9 does not exist" in error_line(capsys)


def test_the_python_api_refuses_unknown_names_and_wrong_types(tmp_path, tiny_data):
    import shutil

    import torch

    from minitransformer import GPT, train
    from minitransformer.activations import ablate, patch, record
    from minitransformer.errors import UserError
    from minitransformer.inspection import break_in_attention
    from tests.helpers import small_config

    model = GPT(small_config())
    idx = torch.randint(0, 37, (1, 5))
    for call, match in ((lambda: ablate(model, heads=[(0.9, 1)]), "whole number"),
                        (lambda: record(model, ["nope"]), "'nope' is not an activation"),
                        (lambda: record(model, "blocks.0.attn.q"), r"takes a list, e.g. \[.blocks"),
                        (lambda: patch(model, {"blocks.9.resid_post": torch.zeros(1)}), "not an activation"),
                        (lambda: break_in_attention(model, -1, 99), "layer -1 does not exist")):
        with pytest.raises(UserError, match=match):
            with call():
                model(idx)
    with record(model, ["blocks.1"]) as passes:  # a prefix takes the whole block
        model(idx)
    assert "blocks.1.attn.q" in passes[0] and "blocks.0.attn.q" not in passes[0]
    out = tmp_path / "nb"
    shutil.copytree(tiny_data, out / "data")
    with pytest.raises(UserError, match="whole number of steps"):
        train(str(ROOT / "configs" / "tiny.toml"), out=out, pause_after=1.5, quiet=True)
    with pytest.raises(UserError, match="out_dir is empty"):
        train(str(ROOT / "configs" / "tiny.toml"), out="", quiet=True)


def test_a_recorder_sees_what_the_model_computed_whichever_block_is_outside(tmp_path):
    import torch

    from minitransformer import GPT
    from minitransformer.activations import ablate, record
    from tests.helpers import small_config

    model = GPT(small_config())
    idx = torch.randint(0, 37, (1, 5))
    with record(model, ["blocks.0.attn.heads"]) as outside, ablate(model, heads=[(0, 1)]):
        model(idx)
    with ablate(model, heads=[(0, 1)]), record(model, ["blocks.0.attn.heads"]) as inside:
        model(idx)
    for passes in (outside, inside):
        assert torch.count_nonzero(passes[0]["blocks.0.attn.heads"][:, 1]) == 0  # the ablated head, as computed
    assert torch.equal(outside[0]["blocks.0.attn.heads"], inside[0]["blocks.0.attn.heads"])


def test_out_given_empty_on_the_command_line_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", str(ROOT / "configs" / "tiny.toml"), "--out", ""]) == 2
    assert "out_dir is empty" in error_line(capsys) and not list(tmp_path.iterdir())


def test_tokenize_merges_output_is_bounded_for_long_chunks_and_texts(capsys):
    assert main(["tokenize", "gpt2", "a" * 20_000, "--merges"]) == 0
    out = capsys.readouterr().out
    assert "too long to show merge by merge" in out and len(out) < 200_000
    assert main(["tokenize", "gpt2", "the kingdom of heaven " * 2000, "--merges"]) == 0
    out = capsys.readouterr().out
    assert "are not shown" in out and out.count("\n") < 10_000


def test_a_refused_start_leaves_no_empty_run_folder(tmp_path, capsys):
    out = tmp_path / "new" / "run"
    assert main(["train", "--config", str(ROOT / "configs" / "tiny.toml"), "--out", str(out), "--set",
                 "data.tokenizer=BPE"]) == 2
    assert "BPE" in error_line(capsys)
    assert not (tmp_path / "new").exists()  # neither the run folder nor the parent made for it


@pytest.mark.parametrize("damage", ["past-vocabulary", "odd-size", "empty"])
def test_heads_checks_the_validation_split_as_training_does(tiny_run, tmp_path, capsys, damage):
    import shutil

    import numpy as np

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    val = run / "data" / "val.bin"
    tokens = np.fromfile(val, dtype=np.uint16)
    if damage == "past-vocabulary":
        tokens[5] = 9999
        tokens.tofile(val)
    elif damage == "odd-size":
        val.write_bytes(val.read_bytes()[:-1])
    else:
        val.write_bytes(b"")
    assert main(["heads", str(run), "--batches", "1"]) == 2
    assert "does not match its meta.json" in error_line(capsys)


def test_heads_measures_in_batches_whatever_their_number(tiny_run):
    """The losses are means over batches of 8 windows, one batch in memory at a time: 3 batches give
    the mean of the 3 batches' own losses."""
    import torch

    from minitransformer import load_model
    from minitransformer.activations import ablation_losses
    from minitransformer.commands.heads import BATCH, held_out_tokens, rank_heads
    from minitransformer.training.data import get_batch

    rises = rank_heads(str(tiny_run), batches=3, say=lambda line: None)
    model, tokenizer = load_model(str(tiny_run))
    tokens, _ = held_out_tokens(str(tiny_run), None, tokenizer)
    generator = torch.Generator().manual_seed(0)
    each = [ablation_losses(model, *get_batch(tokens, BATCH, model.config.block_size, generator, torch.device("cpu")))
            for _ in range(3)]
    expected = sum(losses - base for base, losses in each) / 3
    torch.testing.assert_close(rises, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["cpu:7", "cuda:99"])
def test_a_device_that_does_not_exist_is_said_to_be_that(tiny_run, capsys, name):
    assert main(["sample", "--checkpoint", str(tiny_run), "--device", name, "--max-new-tokens", "2"]) == 2
    err = error_line(capsys)
    assert name in err and "damaged" not in err


def test_windows_is_refused_in_one_line(capsys, monkeypatch):
    monkeypatch.setattr(sys, "platform", "win32")
    assert main(["train"]) == 2
    assert "WSL" in error_line(capsys)


def test_bench_remeasure_measures_the_peak_again(monkeypatch):
    import torch

    calls = []
    monkeypatch.setattr(device, "best_seconds", lambda work, dev, repeats=2, warmups=1: calls.append(1) or 1.0)
    device.remember(f"{device.machine_key(torch.device('cpu'))}; matmul peak float32", 5e10)
    assert device.matmul_peak(torch.float32, torch.device("cpu")) == 5e10 and not calls
    device.matmul_peak(torch.float32, torch.device("cpu"), remeasure=True)
    assert calls


def test_previous_copies_survive_a_copy_that_vanishes_meanwhile(tmp_path, monkeypatch):
    from minitransformer.machine import files

    gone = tmp_path / f".last.{1}.abc.{files.PREVIOUS}"
    kept = tmp_path / f".last.{2}.def.{files.PREVIOUS}"
    kept.mkdir()
    monkeypatch.setattr(files, "own_leftovers", lambda folder, kind, name=None: iter([gone, kept]))
    assert files.previous_copies(tmp_path / "last") == [kept]


@pytest.mark.parametrize("setting", ["data.tokenizer=gpt2", "data.val_fraction=0.2"])
def test_resume_refuses_other_data_settings_before_touching_the_data(tiny_run, tmp_path, capsys, setting):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = {path.name: path.read_bytes() for path in (run / "data").iterdir()}
    assert main(["train", "--out", str(run), "--resume", "--set", "train.max_steps=60", "--set", setting]) == 2
    err = error_line(capsys)
    assert setting.split("=")[0] in err and "--init-from" in err
    assert {path.name: path.read_bytes() for path in (run / "data").iterdir()} == before


def test_a_damaged_meta_json_is_named_as_such(tiny_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    meta = run / "data" / "meta.json"
    meta.write_text(meta.read_text()[:20])
    assert main(["train", "--out", str(run), "--resume", "--set", "train.max_steps=60"]) == 2
    err = error_line(capsys)
    assert "meta.json is damaged" in err and "delete" in err


def test_an_import_that_cannot_write_says_to_run_it_again_not_to_resume(tiny_run, tmp_path, capsys, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    assert main(["export-gpt2", str(tiny_run), "--out", str(tmp_path / "hf")]) == 0
    monkeypatch.setattr("minitransformer.formats.checkpoint.save_file", full)
    assert main(["import-gpt2", str(tmp_path / "hf"), "--out", str(tmp_path / "back")]) == 2
    err = error_line(capsys)
    assert "run the command again" in err and "--resume" not in err


@pytest.mark.parametrize("setting", ["train.batch_size=100000000", "model.n_layer=0", "train.time_budget_s=0.001"])
def test_a_start_refused_after_the_data_is_prepared_leaves_nothing(tmp_path, capsys, setting):
    """Refused once the corpus is tokenised (the memory check, the budget): data/ goes too, and the
    folders made for the run."""
    out = tmp_path / "new" / "run"
    assert main(["train", "--config", str(ROOT / "configs" / "tiny.toml"), "--out", str(out), "--set", setting]) == 2
    assert error_line(capsys) and not (tmp_path / "new").exists()


def test_a_refused_start_keeps_the_data_folder_it_found(run_dir, capsys):
    before = sorted(path.name for path in (run_dir / "data").iterdir())
    assert main(["train", "--config", str(ROOT / "configs" / "tiny.toml"), "--out", str(run_dir), "--set",
                 "train.batch_size=100000000"]) == 2
    assert sorted(path.name for path in (run_dir / "data").iterdir()) == before


@pytest.mark.parametrize("inside", ["last", "best", "data", "last/x", "data/x/y", "best/../last"])
def test_a_run_inside_a_folder_we_wrote_is_refused(tiny_run, tmp_path, capsys, inside):
    """--out inside a run (its checkpoints, its data) would mix a second run into the first."""
    before = {path: path.stat().st_mtime_ns for path in tiny_run.rglob("*")}
    assert main(["train", "--config", str(ROOT / "configs" / "tiny.toml"), "--out", f"{tiny_run}/{inside}",
                 *QUICK, "--set", "train.max_steps=2"]) == 2
    assert "written by minitransformer" in error_line(capsys)
    assert {path: path.stat().st_mtime_ns for path in tiny_run.rglob("*")} == before


def test_a_run_inside_an_exported_model_is_refused(tiny_run, tmp_path, capsys):
    assert main(["export-gpt2", str(tiny_run), "--out", str(tmp_path / "hf")]) == 0
    capsys.readouterr()
    assert main(["train", "--config", str(ROOT / "configs" / "tiny.toml"), "--out", str(tmp_path / "hf" / "run")]) == 2
    assert "a model written by minitransformer" in error_line(capsys) and not (tmp_path / "hf" / "run").exists()


@pytest.mark.parametrize("command", [
    ["sample", "--checkpoint", "~nosuchuser0/run", "--prompt", "a"], ["inspect", "--checkpoint", "~nosuchuser0/run",
                                                                       "--prompt", "a"],
    ["heads", "~nosuchuser0/run"], ["export-gpt2", "~nosuchuser0/run", "--out", "x"], ["plot", "~nosuchuser0/run"],
    ["train", "--init-from", "~nosuchuser0/run", "--out", "x"], ["train", "--out", "~nosuchuser0/run"],
    ["train", "--config", "~nosuchuser0/c.toml"], ["import-gpt2", "gpt2", "--out", "~nosuchuser0/x"],
])
def test_a_home_folder_that_cannot_be_found_is_one_line(tmp_path, capsys, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    assert main(command) == 2
    assert "~nosuchuser0 names no user" in error_line(capsys) and not list(tmp_path.iterdir())


def test_load_model_with_an_unknown_home_is_a_user_error():
    from minitransformer import load_model
    from minitransformer.errors import UserError

    with pytest.raises(UserError, match="names no user"):
        load_model("~nosuchuser0/run")


def test_train_from_python_refuses_a_misspelled_table(tmp_path):
    from minitransformer import train
    from minitransformer.errors import UserError

    config = tmp_path / "x.toml"
    config.write_text((ROOT / "configs" / "tiny.toml").read_text() + "\n[trian]\nmax_steps = 3\n")
    with pytest.raises(UserError, match=r"unknown table \[trian\]"):
        train(str(config), out=tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


def test_every_wrong_input_to_the_activation_tools_is_one_user_error():
    import torch

    from minitransformer import GPT
    from minitransformer.activations import ablate, ablation_losses, logit_lens, patch, record
    from minitransformer.errors import UserError
    from tests.helpers import small_config

    model = GPT(small_config())
    V, block = model.config.vocab_size, model.config.block_size
    idx = torch.randint(0, V, (1, 5))
    ids_wrong = [[1, 2, 3], torch.zeros(1, 3), torch.tensor([1, 2]), torch.zeros(1, 0, dtype=torch.long),
                 torch.tensor([[V]]), torch.tensor([[-1]]), torch.zeros(1, block + 1, dtype=torch.long), None, 3]
    calls = [lambda: record(model, 5), lambda: record(model, [1]), lambda: record(model, {"embed": 1}),
             lambda: ablate(model, heads=None), lambda: ablate(model, heads=3), lambda: ablate(model, mlps=[0.5]),
             lambda: ablate(model, heads="0.1"), lambda: ablate(model, heads=[(0, 1)], how=["mean"]),
             lambda: ablate(model, heads=[(0, 9)]), lambda: patch(model, [("embed", idx)]),
             lambda: patch(model, {"embed": [1.0]}), lambda: patch(model, None)]
    calls += [lambda ids=ids: ablate(model, heads=[(0, 0)], how="mean", reference=ids) for ids in ids_wrong]
    for call in calls:
        with pytest.raises(UserError):
            with call():
                model(idx)
    for ids in ids_wrong:
        with pytest.raises(UserError):
            logit_lens(model, ids)
        with pytest.raises(UserError):
            ablation_losses(model, ids, idx)
        with pytest.raises(UserError):
            ablation_losses(model, idx, ids)
    for kwargs in (dict(how="mean"), dict(how="sum"), dict(how="zero", reference=idx), dict(how="mean", means=[1])):
        with pytest.raises(UserError):
            ablation_losses(model, idx, idx, **kwargs)
    with pytest.raises(UserError, match="shape"):
        ablation_losses(model, idx, idx[:, :3])


def test_record_takes_names_from_any_iterable():
    import torch

    from minitransformer import GPT
    from minitransformer.activations import record
    from tests.helpers import small_config

    model = GPT(small_config())
    with record(model, (name for name in ["blocks.0.attn.q", "logits"])) as passes:
        model(torch.zeros(1, 3, dtype=torch.long))
    assert sorted(passes[0]) == ["blocks.0.attn.q", "logits"]


def test_mean_ablation_takes_each_reference_mean_once(tiny_run, monkeypatch, capsys):
    """heads --how mean: one reference pass for all heads and batches, and the same losses as
    ablating each head with ablate() on its own."""
    import torch

    from minitransformer import activations, load_model
    from minitransformer.activations import ablate, ablation_losses

    calls = []
    real = activations.reference_means
    monkeypatch.setattr(activations, "reference_means", lambda *args: calls.append(1) or real(*args))
    assert main(["heads", str(tiny_run), "--how", "mean", "--batches", "3"]) == 0
    assert len(calls) == 1
    model, _ = load_model(tiny_run)
    x, reference = torch.randint(0, model.config.vocab_size, (2, 2, 8))
    base, losses = ablation_losses(model, x, x, how="mean", reference=reference)
    for layer, head in ((0, 0), (1, 1)):
        with ablate(model, heads=[(layer, head)], how="mean", reference=reference):
            logits, _ = model(x)
        expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), x.flatten()).item()
        assert losses[layer, head].item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps", "cpu:2", "tpu"])
def test_load_model_on_a_device_this_machine_lacks_says_so(tiny_run, device):
    import torch

    from minitransformer import load_model
    from minitransformer.errors import UserError

    if device.startswith("cuda") and torch.cuda.is_available() or device == "mps" and torch.backends.mps.is_available():
        pytest.skip(f"this machine has {device}")
    with pytest.raises(UserError) as raised:
        load_model(tiny_run, device=device)
    assert "damaged" not in str(raised.value) and (device.split(":")[0] in str(raised.value))


def test_every_wrong_input_to_the_python_api_is_one_user_error(tiny_run, tmp_path):
    """Types as well as values: what would otherwise be a TypeError, IndexError or RuntimeError
    from deep inside PyTorch is one UserError naming the argument."""
    import torch

    from minitransformer import GPT, generate, generate_batch, load_model, train
    from minitransformer.errors import UserError

    model, _ = load_model(tiny_run)
    V = model.config.vocab_size
    idx = torch.tensor([[1, 2, 3]])
    tiny = str(ROOT / "configs" / "tiny.toml")
    calls = [
        lambda: generate(model, [[1, 2]], 3), lambda: generate(model, torch.zeros(1, 2), 3),
        lambda: generate(model, torch.tensor([1, 2]), 3), lambda: generate(model, torch.tensor([[V]]), 3),
        lambda: generate(model, torch.tensor([[-1]]), 3), lambda: generate(model, idx, 3, top_k=2.5),
        lambda: generate(model, idx, 3, top_k=True), lambda: generate(model, idx, 3, temperature="1"),
        lambda: generate(model, idx, 3, top_p=float("nan")), lambda: generate(model, idx, 3, generator=5),
        lambda: generate_batch(model, "abc", 3), lambda: generate_batch(model, [[V]], 3),
        lambda: generate_batch(model, [[1.5]], 3), lambda: generate_batch(model, [[[1]]], 3),
        lambda: generate_batch(model, [[1], []], 3), lambda: generate_batch(model, [], 3),
        lambda: load_model(None), lambda: load_model(5), lambda: load_model(tiny_run, device=0),
        lambda: train(5, out=tmp_path / "a", quiet=True), lambda: train(tiny, out=5, quiet=True),
        lambda: train(tiny, out=tmp_path / "a", quiet="no"), lambda: train(tiny, out=tmp_path / "a", init_from=5),
        lambda: train(tiny, out=tmp_path / "a", resume="yes"), lambda: train(tiny, out=tmp_path / "a", seed=1.5),
        lambda: train(tiny, out=tmp_path / "a", **{"trian.max_steps": 1}),
        lambda: GPT({"n_layer": 1}), lambda: model(idx, torch.tensor([[1]])),
    ]
    for number, call in enumerate(calls):
        with pytest.raises(UserError):
            call()
    assert not (tmp_path / "a").exists() and not (ROOT / "5").exists()


def test_inspect_refuses_how_without_ablate(tiny_run, capsys):
    assert main(["inspect", "--checkpoint", str(tiny_run), "--prompt", "ab", "--how", "mean"]) == 2
    assert "--how mean says how --ablate" in error_line(capsys)


def test_the_tools_refuse_what_is_not_a_model():
    import torch

    from minitransformer import generate, generate_batch
    from minitransformer.activations import ablate, ablation_losses, logit_lens, patch, record
    from minitransformer.errors import UserError
    from minitransformer.induction import induction_report

    idx = torch.zeros(1, 3, dtype=torch.long)
    for call in (lambda: record(None).__enter__(), lambda: ablate("run", heads=[(0, 0)]).__enter__(),
                 lambda: patch(3, {}).__enter__(), lambda: logit_lens(None, idx), lambda: ablation_losses(None, idx, idx),
                 lambda: induction_report("runs/induction"), lambda: generate(None, idx, 3),
                 lambda: generate_batch("model", [[1]], 3)):
        with pytest.raises(UserError, match="must be a minitransformer GPT"):
            call()
