#!/usr/bin/env bash
# Every check that needs a GPU, in one run of a few minutes, for a machine with one CUDA GPU:
#   bash scripts/gpu_check.sh [OUT_DIR]
# It prints the figures the README quotes and writes the runs under OUT_DIR (default runs/gpu_check).
# The CPU paths are covered by the test suite; this script is for the CUDA paths: bf16 autocast,
# torch.compile (train.compile=auto), fused AdamW, TF32, torchrun with NCCL, decoding over the cache.
# The side-by-side checks need nanoGPT's model.py: NANOGPT names its folder (default
# ../shared/baselines/nanoGPT; on a machine that gets only this repository, copy that folder
# into an ignored folder of the repository first and point NANOGPT there).
set -euo pipefail
out=${1:-runs/gpu_check}
nanogpt=${NANOGPT:-../shared/baselines/nanoGPT}
rm -rf "$out"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print(torch.__version__, torch.cuda.get_device_name())"
gpu=configs/shakespeare_char_gpu.toml
quick=(--set train.max_steps=300 --set train.eval_interval=150 --set train.eval_batches=20 --set train.sample_tokens=0)

echo "== bench: training tokens/s and MFU, decoding at batch 1 and 8 (the GPU config's model)"
python -m minitransformer bench --config $gpu --steps 10

echo "== train 300 steps: compiled (auto on CUDA) against eager"
python -m minitransformer train --config $gpu --out "$out/compiled" "${quick[@]}" | grep -v "%|"
python -m minitransformer train --config $gpu --out "$out/eager" "${quick[@]}" --set train.compile=false | grep -v "%|"

echo "== the same through torchrun with one process (NCCL), against the plain command"
torchrun --standalone --nproc_per_node=1 -m minitransformer train --config $gpu --out "$out/torchrun" "${quick[@]}" \
    | grep -v "%|"
python - "$out" <<'PY'
import json, sys
for name in ("compiled", "eager", "torchrun"):
    rows = [json.loads(line) for line in open(f"{sys.argv[1]}/{name}/metrics.jsonl")]
    print(f"{name}: {rows[-1]['tokens_per_s']:,.0f} tokens/s, MFU {rows[-1]['mfu']:.1%}, val {rows[-1]['val_loss']:.4f}")
PY

echo "== checkpoints hold no _orig_mod. or module. keys, and sample on one device"
python - "$out" <<'PY'
import sys
from safetensors.torch import load_file
for name in ("compiled", "torchrun"):
    keys = load_file(f"{sys.argv[1]}/{name}/last/model.safetensors")
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in keys), name
print("plain keys: ok")
PY
python -m minitransformer sample --checkpoint "$out/compiled" --max-new-tokens 200 --dtype bfloat16 | tail -3

echo "== decoding side by side with nanoGPT on the GPU (float32 and bf16)"
python scripts/bench_decode.py --device cuda --nanogpt "$nanogpt"

echo "== the GPU config in full (goal: val <= 1.40 within 60 s of training)"
python -m minitransformer train --config $gpu --out "$out/full" --set train.sample_tokens=0 | grep -v "%|"
python - "$out" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(f"{sys.argv[1]}/full/metrics.jsonl")]
best = min(rows, key=lambda row: row["val_loss"])
print(f"best val {best['val_loss']:.4f} at step {best['step']}, {best['elapsed_s']:.0f} s of training; "
      f"last {rows[-1]['val_loss']:.4f} at step {rows[-1]['step']}, {rows[-1]['elapsed_s']:.0f} s")
PY

echo "== training side by side with nanoGPT on the GPU (batch 64, both compiled)"
python scripts/bench_train.py --device cuda --batch 64 --steps 20 --compile-nanogpt --nanogpt "$nanogpt"
