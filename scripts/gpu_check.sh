#!/usr/bin/env bash
# Every check that needs a GPU, for a machine with one CUDA GPU:
#   bash scripts/gpu_check.sh [OUT_DIR] [SECTION ...]
# It prints the figures the README quotes, side by side with nanoGPT where there is one, and
# writes its runs under OUT_DIR (default runs/gpu_check; it must not exist yet, or be empty).
# SECTIONs, in the order they run (default: all of them, about 10 minutes):
#   tests     the CUDA paths' tests (tests/test_gpu.py)                                  ~1.5 min
#   decode    decoding at batch 1 against nanoGPT, graphs on and off                    ~0.5 min
#   train     both training commands side by side; Muon against AdamW                   ~3.5 min
#   config    the GPU config in full, on the command's wall clock, under each
#             train.compile setting (auto, reduce-overhead, false)                       ~4.5 min
#   torchrun  one process under torchrun (NCCL), compiled; plain checkpoint keys; sampling ~1 min
# A device lent for 15 minutes in all fits `tests decode train` in one call and `config
# torchrun` in a second.
# The CPU paths are covered by the test suite; this script is for the CUDA paths: CUDA-graph
# decoding, the training step that never waits for the host, stacked Muon, float16 with its
# scaler, bf16 autocast, torch.compile, torchrun with NCCL.
# The side-by-side checks need nanoGPT's model.py, train.py, configurator.py and config/: NANOGPT
# names its folder (default ../shared/baselines/nanoGPT; on a machine that gets only this
# repository, copy that folder into an ignored folder of the repository first, e.g. runs/nanoGPT,
# and point NANOGPT there).
set -uo pipefail
out=${1:-runs/gpu_check}
shift $(( $# > 0 ? 1 : 0 ))
sections=${*:-tests decode train config torchrun}
for section in $sections; do
    case $section in
        tests|decode|train|config|torchrun) ;;
        *) echo "error: no section '$section'; choose from: tests decode train config torchrun" >&2; exit 2 ;;
    esac
done
nanogpt=${NANOGPT:-../shared/baselines/nanoGPT}
if [ ! -f "$nanogpt/model.py" ] || [ ! -f "$nanogpt/train.py" ]; then
    echo "error: no nanoGPT at $nanogpt (model.py, train.py); copy ../shared/baselines/nanoGPT into runs/nanoGPT and set NANOGPT=runs/nanoGPT" >&2
    exit 2
fi
if [ -e "$out" ] && [ -n "$(ls -A "$out")" ]; then
    echo "error: $out already holds files; name a new or empty folder" >&2
    exit 2
fi
mkdir -p "$out"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # scripts/ import the package from this checkout
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print(torch.__version__, torch.cuda.get_device_name())" || exit 1
gpu=configs/shakespeare_char_gpu.toml
wanted() { [[ " $sections " == *" $1 "* ]]; }

if wanted tests; then
    echo "== tests: graph decoding = eager decoding, no host sync while generating or in a training step, bounded graphs, float16"
    timeout 150 python -m pytest -q -p no:cacheprovider -n 0 tests/test_gpu.py 2>&1 | tail -15
fi

if wanted decode; then
    echo "== decode: batch 1 side by side with nanoGPT (goal: >= 5x), float32 and bf16, graphs on and off"
    timeout 90 python scripts/bench_decode.py --device cuda --nanogpt "$nanogpt"
fi

if wanted train; then
    echo "== train: side by side with nanoGPT's train.py (goal: >= 1.2x), and Muon against AdamW (goal: <= 1.15x)"
    timeout 270 python scripts/bench_train.py --device cuda --batch 64 --steps 250 --rounds 1 --compile auto,reduce-overhead \
        --optimizers --nanogpt "$nanogpt"
fi

if wanted config; then
    # Compilation is part of the command's minute: with a host-bound step it may cost more than
    # it saves, so each setting runs the whole command.
    for setting in auto reduce-overhead false; do
        echo "== config: the GPU config in full with train.compile=$setting, on the whole command's clock (goal: val <= 1.40 within 60 s)"
        timeout 100 python scripts/time_to_loss.py 1.40 minitransformer train --config $gpu --out "$out/full-$setting" \
            --set train.sample_tokens=0 --set train.compile=$setting
    done
fi

if wanted torchrun; then
    echo "== torchrun: one process (NCCL); checkpoints hold no _orig_mod. or module. keys; sampling from one"
    timeout 90 torchrun --standalone --nproc_per_node=1 -m minitransformer train --config $gpu --out "$out/torchrun" \
        --set train.max_steps=40 --set train.eval_interval=20 --set train.eval_batches=5 --set train.sample_tokens=0 \
        2>&1 | grep -v "%|"
    python - "$out" <<'PY'
import sys
from pathlib import Path
from safetensors.torch import load_file
for run in sorted(Path(sys.argv[1]).iterdir()):
    try:
        keys = load_file(run / "last" / "model.safetensors")
    except Exception as error:
        print(f"{run.name}: no checkpoint ({error})")
        continue
    bad = [k for k in keys if k.startswith(("_orig_mod.", "module."))]
    print(f"{run.name}: plain keys: {'ok' if not bad else bad[:3]}")
PY
    timeout 40 python -m minitransformer sample --checkpoint "$out/torchrun" --max-new-tokens 200 | tail -4
fi
