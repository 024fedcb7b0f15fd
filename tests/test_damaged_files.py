"""Damaged, foreign or mismatched files, and an environment that refuses: one line on stderr with
exit code 2 (never a traceback, never garbage with exit 0), and the previous good files intact."""

import json
import os
import pickle
import resource
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from minitransformer.commands.cli import main, report
from minitransformer.formats.load import load_model
from tests.conftest import QUICK, ROOT, TINY, error_line, train_tiny
from tests.helpers import HANG_S, wait_until


def copy_run(source, target):
    shutil.copytree(source, target)
    return target


def read_json(path):
    return json.loads(path.read_text())


@pytest.mark.parametrize("swap", ["permuted", "another run's"])
@pytest.mark.parametrize("command", ["sample", "inspect", "resume"])
def test_a_tokenizer_that_is_not_the_weights_is_refused(tiny_run, tmp_path, capsys, swap, command):
    run = copy_run(tiny_run, tmp_path / "run")
    for name in ("last", "best"):
        description = read_json(run / name / "tokenizer.json")
        chars = description["chars"]
        # Same size either way: a permutation, or another corpus's alphabet of as many characters.
        description["chars"] = chars[::-1] if swap == "permuted" else "".join(chr(0x400 + i) for i in range(len(chars)))
        (run / name / "tokenizer.json").write_text(json.dumps(description))
    args = {"sample": ["sample", "--checkpoint", str(run), "--max-new-tokens", "5"],
            "inspect": ["inspect", "--checkpoint", str(run), "--prompt", "ab"],
            "resume": ["train", "--out", str(run), "--resume", "--set", "train.max_steps=60"]}[command]
    if command == "inspect" and swap != "permuted":
        args[-1] = chr(0x400) * 2
    assert main(args) == 2
    assert "does not belong to the weights" in error_line(capsys)


def test_an_exported_folder_with_a_swapped_tokenizer_is_refused(tiny_run, tmp_path):
    assert main(["export-gpt2", str(tiny_run), "--out", str(tmp_path / "hf")]) == 0
    load_model(tmp_path / "hf")  # its own tokenizer: fine
    description = read_json(tmp_path / "hf" / "tokenizer.json")
    description["chars"] = description["chars"][::-1]
    (tmp_path / "hf" / "tokenizer.json").write_text(json.dumps(description))
    with pytest.raises(ValueError, match="does not belong"):
        load_model(tmp_path / "hf")


@pytest.mark.parametrize("content", ["[]", '{"kind": "char"}', '{"kind": "char", "chars": 5}', '{"kind": "char", "chars": "aa"}',
                                     '{"kind": "tiktoken"}', '{"kind": "bpe"}', "null", "{"])
def test_a_damaged_tokenizer_file_is_one_line(tiny_run, tmp_path, capsys, content):
    run = copy_run(tiny_run, tmp_path / "run")
    (run / "best" / "tokenizer.json").write_text(content)
    assert main(["sample", "--checkpoint", str(run / "best"), "--max-new-tokens", "5"]) == 2
    assert "damaged" in error_line(capsys)


@pytest.mark.parametrize("lines, kept", [
    (["[1,2,3]"], 3), (['{"step": 250}'], 3), (['{"step": "x", "train_loss": 1, "val_loss": 1}'], 3),
    (['{"step": 60, "train_loss": NaN, "val_loss": 1}'], 3), ([b"\xff\xfe garbage \x80".decode("latin-1")], 3),
])
def test_plot_drops_damaged_metrics_lines_with_a_warning(tiny_run, tmp_path, capsys, lines, kept):
    run = copy_run(tiny_run, tmp_path / "run")
    with (run / "metrics.jsonl").open("a", encoding="latin-1") as file:
        file.writelines(line + "\n" for line in lines)
    assert main(["plot", str(run)]) == 0
    captured = capsys.readouterr()
    assert "dropped 1 damaged line" in captured.err and "Last: step 40" in captured.out
    assert len([row for row in (run / "metrics.jsonl").read_bytes().splitlines() if row.startswith(b'{"step"')]) >= kept


def test_plot_of_metrics_without_a_readable_row_is_one_line(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_bytes(b"\xff\xfe\n[1]\n")
    assert main(["plot", str(tmp_path / "run")]) == 2
    assert "no readable rows" in error_line(capsys)


def test_token_files_overwritten_with_garbage_are_rebuilt(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path / "run")
    good = (run / "data" / "train.bin").read_bytes()
    (run / "data" / "train.bin").write_bytes(np.random.default_rng(0).integers(0, 65535, len(good) // 2, dtype=np.uint16).tobytes())
    assert main(["train", "--out", str(run), "--resume", "--set", "train.max_steps=45"]) == 0
    assert "does not match" in capsys.readouterr().out
    assert (run / "data" / "train.bin").read_bytes() == good


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.parametrize("where", ["state.pt", "model.pt"])
def test_a_pickle_with_code_is_refused_in_one_whole_line(tiny_run, tmp_path, capsys, where):
    run = copy_run(tiny_run, tmp_path / "run")
    if where == "model.pt":  # a version 0.1 checkpoint's weights
        (run / "last" / "model.safetensors").unlink()
    with open(run / "last" / where, "wb") as file:
        pickle.dump({"step": Evil()}, file)
    assert main(["train", "--out", str(run), "--resume", "--set", "train.max_steps=60"]) == 2
    message = error_line(capsys)
    assert "damaged" in message and message.endswith("train again") and len(message) < 500


def test_a_full_disk_is_one_line_whatever_library_writes(tiny_run, tmp_path, capsys):
    """RLIMIT_FSIZE makes writes past a size fail as a full disk would (Python ignores SIGXFSZ):
    torch.save raises its own RuntimeError, safetensors a SafetensorError. Both must be one line,
    the checkpoint intact."""
    weights, state = ((tiny_run / "last" / name).stat().st_size for name in ("model.safetensors", "state.pt"))
    assert state > weights
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    for limit in ((weights + state) // 2, weights // 2):  # state.pt fails, then model.safetensors does
        run = copy_run(tiny_run, tmp_path / f"run{limit}")
        before = {path.name: path.read_bytes() for path in (run / "last").iterdir()}
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
        try:
            code = main(["train", "--out", str(run), "--resume", "--set", "train.max_steps=60"])
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        assert code == 2
        assert error_line(capsys).startswith("error: could not save the checkpoint")
        assert {path.name: path.read_bytes() for path in (run / "last").iterdir()} == before
        assert not [path for path in run.iterdir() if "mt-tmp" in path.name]


def test_closing_stdout_of_a_training_saves_and_says_so(run_dir, capsys, monkeypatch):
    """`minitransformer train | head -1`: the reader leaves (here: a pipe whose reading end is
    closed, so writing raises BrokenPipeError); the run saves last/ and says why on stderr."""
    reader, writer = os.pipe()
    os.close(reader)
    monkeypatch.setattr(sys, "stdout", os.fdopen(writer, "w", buffering=1))
    assert train_tiny(run_dir, "--set", "train.max_steps=100000", "--set", "train.eval_interval=20") == 2
    message = error_line(capsys)
    assert "standard output was closed" in message and "--resume" in message
    assert torch.load(run_dir / "last" / "state.pt", weights_only=True)["step"] == 0


def test_sampling_with_stdout_closed_is_one_line(tiny_run, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdout", None)  # what Python makes of a closed descriptor 1 (`>&-`)
    assert main(["sample", "--checkpoint", str(tiny_run), "--max-new-tokens", "5"]) == 2
    assert error_line(capsys).startswith("error: standard output is closed")


def test_sigterm_while_preparing_data_exits_130_and_leaves_nothing(tmp_path):
    corpus = tmp_path / "big.txt"
    corpus.write_text("To be, or not to be, that is the question. " * 1_000_000)  # 44 MB: a second or two to prepare
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "minitransformer", "train", "--config", TINY, "--out", str(out),
         "--set", f"data.corpus={corpus}", "--set", "data.tokenizer=gpt2", *QUICK],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    wait_until(lambda: out.exists() and any("mt-tmp" in path.name for path in out.iterdir()), process, 0.01)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=HANG_S)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr
    assert not out.exists()  # the folder it made, empty, goes too: nothing is left


def test_an_error_on_a_rank_other_than_0_is_printed_by_that_rank(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    report("error: this rank's data folder cannot be read")
    report("error: a config mistake every rank makes", everywhere=True)
    assert capsys.readouterr().err == "rank 1: error: this rank's data folder cannot be read\n"


def test_rank_1_alone_prints_its_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    assert main(["train", "--config", TINY, "--out", str(tmp_path / "run"), "--set", "train.learning_rate=nan"]) == 2
    assert "train.learning_rate" in error_line(capsys)


def test_the_same_command_gives_the_same_run_with_or_without_cached_measurements(tmp_path, tiny_data, monkeypatch):
    """Measuring the machine (the matrix-product peak for MFU, the precision probe) must not move
    any random state: the first run on a machine equals the tenth (dropout on, so it would show)."""
    curves = []
    cache = tmp_path / "cache"
    for name in ("first", "cached"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
        out = tmp_path / name
        shutil.copytree(tiny_data, out / "data")
        assert train_tiny(out, "--set", "train.max_steps=20", "--set", "train.eval_interval=5",
                          "--set", "model.dropout=0.1") == 0
        curves.append([(row["step"], row["train_loss"], row["val_loss"]) for row in
                       map(json.loads, (out / "metrics.jsonl").read_text().splitlines())])
    assert curves[0] == curves[1]


def test_the_precision_probe_leaves_the_model_and_random_state_as_they_were(tiny_data, monkeypatch):
    from minitransformer.config import TrainConfig
    from minitransformer.model import GPT
    from minitransformer.training.data import prepare_data
    from minitransformer.training.distributed import Ranks
    from minitransformer.training.setup import training_dtype
    from tests.helpers import small_config

    monkeypatch.setattr("minitransformer.machine.device.cpu_computes_bf16", lambda: True)
    dataset = prepare_data("tinyshakespeare", "char", 0.1, tiny_data)
    model = GPT(small_config(vocab_size=65, dropout=0.1))
    weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    rng = torch.get_rng_state()
    said = []
    training_dtype(TrainConfig(dtype="auto"), torch.device("cpu"), model, dataset, Ranks(), said.append, remeasure=True)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(weights[name], tensor) for name, tensor in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert said[0].startswith("precision: ") and "measured now" in said[0]


def test_a_hugging_face_config_that_is_not_an_object_is_one_line(tmp_path, capsys):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text('[{"model_type": "gpt2"}]')
    (tmp_path / "hf" / "model.safetensors").write_bytes(b"")
    assert main(["import-gpt2", str(tmp_path / "hf"), "--out", str(tmp_path / "out")]) == 2
    error_line(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [["inspect", "--prompt", "RO", "--png", "{missing}/a.png"],
                                  ["inspect", "--prompt", "RO", "--html", "{folder}"],
                                  ["heads", "--png", "{missing}/h.png"]])
def test_an_output_file_that_cannot_be_written_is_refused_before_any_work(tiny_run, tmp_path, capsys, args):
    args = [arg.format(missing=tmp_path / "no" / "such", folder=tmp_path) for arg in args]
    where = ["--checkpoint", str(tiny_run)] if args[0] == "inspect" else [str(tiny_run)]
    assert main([args[0], *where, *args[1:]]) == 2
    error_line(capsys)
    assert capsys.readouterr().out == ""


def test_resuming_after_the_corpus_changed_says_so(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("To be, or not to be, that is the question.\n" * 300)
    run = tmp_path / "run"
    assert train_tiny(run, "--set", f"data.corpus={corpus}", "--set", "train.max_steps=10", "--pause-after", "5") == 0
    corpus.write_text("to be, or not To be, that is the question.\n" * 300)  # edited since; the same alphabet
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume"]) == 0
    assert "prepared from other data (the corpus's text has changed)" in capsys.readouterr().out


def test_dropout_and_the_attention_path_may_differ_from_the_saved_config(tiny_run, tmp_path, capsys):
    """They do not change what the weights compute (a fine-tuning sets them), so no digest covers them."""
    run = copy_run(tiny_run, tmp_path / "run")
    config = read_json(run / "best" / "config.json")
    config["model"].update(dropout=0.3, attention="sdpa")
    (run / "best" / "config.json").write_text(json.dumps(config))
    assert main(["sample", "--checkpoint", str(run / "best"), "--max-new-tokens", "5", "--prompt", "A"]) == 0


@pytest.mark.parametrize("clock", [{"eval_s": -1.0}, "not a dict", {"eval_s": float("nan")}])
def test_a_damaged_clock_in_the_training_state_is_one_line(tiny_run, tmp_path, capsys, clock):
    """The saved clock (budget.Clock) is checked with the rest of state.pt: damaged, not a traceback."""
    run = copy_run(tiny_run, tmp_path / "run")
    state = torch.load(run / "last" / "state.pt", weights_only=True)
    state["clock"] = clock if not isinstance(clock, dict) else {**state["clock"], **clock}
    torch.save(state, run / "last" / "state.pt")
    assert main(["train", "--out", str(run), "--resume", "--set", "train.max_steps=80"]) == 2
    err = capsys.readouterr().err
    assert "is damaged" in err and err.count("\n") == 1
