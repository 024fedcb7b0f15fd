#!/usr/bin/env bash
# Every check that needs a GPU, in one run of a few minutes, for a machine with one CUDA GPU:
#   bash scripts/gpu_check.sh [OUT_DIR]
# It prints the figures the README quotes and writes the runs under OUT_DIR (default runs/gpu_check).
# The CPU paths are covered by the test suite; this script is for the CUDA paths only.
set -euo pipefail
out=${1:-runs/gpu_check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print(torch.__version__, torch.cuda.get_device_name())"

echo "== the test suite on a GPU machine (CPU tests, plus CUDA where a test uses it)"
python -m pytest -q -x 2>&1 | tail -3

echo "== train: configs/shakespeare_char_gpu.toml for 500 steps (bf16 autocast, sdpa)"
python -m minitransformer train --config configs/shakespeare_char_gpu.toml --out "$out/gpu_plain" \
    --set train.max_steps=500 --set train.eval_interval=250 --set train.sample_tokens=0 2>&1 | grep -v "%|"
tail -1 "$out/gpu_plain/metrics.jsonl"

echo "== the same through torchrun with one process (tokens/s should match the plain command)"
torchrun --standalone --nproc_per_node=1 -m minitransformer train --config configs/shakespeare_char_gpu.toml \
    --out "$out/gpu_torchrun" --set train.max_steps=500 --set train.eval_interval=250 --set train.sample_tokens=0 \
    2>&1 | grep -v "%|"
python - "$out" <<'PY'
import json, sys
for name in ("gpu_plain", "gpu_torchrun"):
    rows = [json.loads(line) for line in open(f"{sys.argv[1]}/{name}/metrics.jsonl")]
    last = rows[-1]
    print(f"{name}: {last['tokens'] / last['elapsed_s']:,.0f} tokens/s of training, val {last['val_loss']:.4f}")
PY

echo "== sampling on the GPU, batch 1, with the key/value cache"
python -m minitransformer sample --checkpoint "$out/gpu_plain" --max-new-tokens 500 --seed 1 > "$out/sample.txt"
python - "$out" <<'PY'
import sys, time, torch
from minitransformer import generate, load_model
model, _ = load_model(f"{sys.argv[1]}/gpu_plain", "cuda")
idx = torch.zeros(1, 1, dtype=torch.long, device="cuda")
generate(model, idx, 20)
torch.cuda.synchronize(); started = time.perf_counter()
generate(model, idx, 255)
torch.cuda.synchronize(); print(f"decode: {255 / (time.perf_counter() - started):.0f} tokens/s (float32)")
with torch.autocast("cuda", dtype=torch.bfloat16):
    generate(model, idx, 20)
    torch.cuda.synchronize(); started = time.perf_counter()
    generate(model, idx, 255)
    torch.cuda.synchronize(); print(f"decode: {255 / (time.perf_counter() - started):.0f} tokens/s (bf16 autocast)")
PY
