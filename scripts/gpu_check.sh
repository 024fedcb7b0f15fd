#!/usr/bin/env bash
# Every check that needs a GPU, in one run of a few minutes, for a machine with one CUDA GPU:
#   bash scripts/gpu_check.sh [OUT_DIR]
# It prints the figures the README quotes, side by side with nanoGPT where there is one, and
# writes its runs under OUT_DIR (default runs/gpu_check; it must not exist yet, or be empty).
# The CPU paths are covered by the test suite; this script is for the CUDA paths: CUDA-graph
# decoding, the training step that never waits for the host, stacked Muon, float16 with its
# scaler, bf16 autocast, torch.compile, torchrun with NCCL.
# The side-by-side checks need nanoGPT's model.py, train.py, configurator.py and config/: NANOGPT
# names its folder (default ../shared/baselines/nanoGPT; on a machine that gets only this
# repository, copy that folder into an ignored folder of the repository first, e.g. runs/nanoGPT,
# and point NANOGPT there).
set -uo pipefail
out=${1:-runs/gpu_check}
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

echo "== 1. the CUDA paths' tests: graph decoding = eager decoding, no host sync in a training step, bounded graphs, float16"
timeout 150 python -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -15

echo "== 2. decoding at batch 1 side by side with nanoGPT (goal: >= 5x), float32 and bf16, graphs on and off"
timeout 90 python scripts/bench_decode.py --device cuda --nanogpt "$nanogpt"

echo "== 3. training side by side with nanoGPT's train.py (goal: >= 1.2x), and Muon against AdamW (goal: <= 1.15x)"
timeout 300 python scripts/bench_train.py --device cuda --batch 64 --steps 300 --compile auto,reduce-overhead \
    --optimizers --nanogpt "$nanogpt"

echo "== 4. the GPU config in full, on the wall clock of the whole command (goal: val <= 1.40 within 60 s)"
timeout 120 python scripts/time_to_loss.py 1.40 minitransformer train --config $gpu --out "$out/full" \
    --set train.sample_tokens=200

echo "== 5. the same with the passes replayed as CUDA graphs (train.compile = reduce-overhead)"
timeout 150 python scripts/time_to_loss.py 1.40 minitransformer train --config $gpu --out "$out/graphs" \
    --set train.sample_tokens=0 --set train.compile=reduce-overhead

echo "== 6. torchrun with one process (NCCL); checkpoints hold no _orig_mod. or module. keys; sampling from one"
timeout 60 torchrun --standalone --nproc_per_node=1 -m minitransformer train --config $gpu --out "$out/torchrun" \
    --set train.max_steps=40 --set train.eval_interval=20 --set train.eval_batches=5 --set train.sample_tokens=0 \
    --set train.compile=false 2>&1 | grep -v "%|"
python - "$out" <<'PY'
import sys
from safetensors.torch import load_file
for name in ("full", "torchrun"):
    try:
        keys = load_file(f"{sys.argv[1]}/{name}/last/model.safetensors")
    except Exception as error:
        print(f"{name}: no checkpoint ({error})")
        continue
    bad = [k for k in keys if k.startswith(("_orig_mod.", "module."))]
    print(f"{name}: plain keys: {'ok' if not bad else bad[:3]}")
PY
timeout 40 python -m minitransformer sample --checkpoint "$out/full" --max-new-tokens 200 | tail -4
