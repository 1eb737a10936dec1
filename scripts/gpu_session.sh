#!/usr/bin/env bash
# One prepared run for a session that is lent a GPU (the device tool), about 12 minutes:
#   1. forward speed and memory of the presets, anchors.md's protocol (fp16 autocast, batch 1), and issue 5's
#      x16 8K output through the tiled path under an 8 GiB cap, in fp16 and in float32;
#   2. fidelity training of configs/gpu-x4.yaml on the carried .traindata/ (make it first, on this machine:
#      python scripts/pack_traindata.py), exported as fp16 safetensors;
#   3. everything worth keeping copied to $OUT (files up to 16 MiB come back).
# Call it through the device tool with carry [".traindata"]; STEPS=200 for a dry run. Afterwards, here:
#   python scripts/ship_model.py <OUT>/generator.safetensors --name mgbp-x4-gpu --stage <OUT>/run
set -euo pipefail
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-out}
STEPS=${STEPS:-20000}
PY=${PYTHON:-python3}
mkdir -p "$OUT/run"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt" || true
"$PY" benchmarks/bench_forward.py --preset bicubic fast-x4 mgbpv2-x4 --lr-size 480x270 960x540 \
  | tee "$OUT/bench_forward.jsonl"
"$PY" benchmarks/bench_forward.py --preset mgbpv2-x16 --lr-size 240x135 480x270 | tee -a "$OUT/bench_forward.jsonl"
for DTYPE in half float32; do
  "$PY" benchmarks/bench_tiled_memory.py --preset mgbpv2-x16 --lr-size 480x270 --device cuda \
    --max-gpu-memory 8 --dtype "$DTYPE" | tee -a "$OUT/bench_x16_8k.jsonl"
done
"$PY" -m mgbp.train configs/gpu-x4.yaml steps="$STEPS" export_dtype=float16 --quiet 2>&1 | tail -n 40 \
  | tee "$OUT/train.log"
cp runs/gpu-x4/generator.safetensors runs/gpu-x4/config.yaml runs/gpu-x4/log.jsonl "$OUT/run/"
cp runs/gpu-x4/generator.safetensors "$OUT/generator.safetensors"
