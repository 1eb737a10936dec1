#!/usr/bin/env bash
# One prepared run for a session that is lent a GPU (the device tool), about 12 minutes:
#   1. speed, benchmarks/bench_speed.py sections a-c in fp16 and bf16 (the project vs the authors' G-MGBP and
#      MGBPv2 code, Table I presets at anchors.md's 480x270 -> 1920x1080, shipped models vs SPAN,
#      SRVGGNetCompact, EDSR-baseline), JSON + Markdown per precision;
#   1b. Table I x4 and mgbp-x4 forward variants (fp16 autocast / fp16 weights, channels-last / NCHW / CUDA graph)
#      with a kernel profile (benchmarks/bench_forward.py): where the fp16 time goes;
#   2. fp16 / bf16 outputs of the shipped x4 model and BOE-R3 on Set14: no NaN, no black image, PSNR-Y against
#      float32 (benchmarks/check_low_precision.py);
#   3. issue 5's x16 8K output (480x270 -> 7680x4320) through the tiled path under an 8 GiB cap, fp16 / bf16 /
#      float32 (benchmarks/bench_tiled_memory.py);
#   4. fidelity training, on the carried .traindata/ (make it first, on this machine: python
#      scripts/pack_traindata.py), of the shipped model furthest below its target, resumed from its shipped
#      weights grown to MU back-projection steps per level (`mgbp convert --mu`, same output at the start):
#      GPU_CONFIG (default configs/gpu-x2.yaml, MODEL mgbp-x2, MU 4; configs/gpu-x4.yaml with MODEL= trains the
#      fast-x4 preset from scratch instead), exported as fp16 safetensors;
#   5. everything worth keeping copied to $OUT (files up to 16 MiB come back).
# Call it through the device tool with carry [".traindata"] (training images + the .traindata/shared mirror of
# Set14, BOE-R3 and the authors' code for steps 1-2); STEPS=200 for a short run. Afterwards, here:
#   python scripts/ship_model.py <OUT>/generator.safetensors --name mgbp-x2 --init mgbp-x2 --continues --stage <OUT>/run
# (it measures the file on Set5/Set14 here; ship it only if it beats the current one).
# Dry run on a CPU (a few minutes): DEVICE=cpu QUICK=--quick STEPS=2 TRAIN_DATA=../shared/data/train \
#   OUT=/tmp/gpu_session RUN_DIR=/tmp/gpu_session/train scripts/gpu_session.sh
set -euo pipefail
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-out}
STEPS=${STEPS:-20000}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-}              # --quick: small sizes, 2 rounds (a dry run)
SHARED=${SHARED:-../shared}   # the authors' code, BOE-R3 and Set14 (skipped with a reason when absent)
# The device has no ../shared: scripts/pack_traindata.py mirrors what steps 1-2 read into the carried .traindata/shared
if [ ! -d "$SHARED" ] && [ -d .traindata/shared ]; then SHARED=.traindata/shared; fi
TRAIN_DATA=${TRAIN_DATA:-}    # another training folder than the carried .traindata/train (dry runs)
GPU_CONFIG=${GPU_CONFIG:-configs/gpu-x2.yaml}
MODEL=${MODEL-mgbp-x2}        # the shipped weights to resume from (empty: the config's own start)
MU=${MU:-4}
RUN_DIR=${RUN_DIR:-runs/gpu-x2}
mkdir -p "$OUT/run"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt" || true

SKIP_SPEED=${SKIP_SPEED:-}  # non-empty: skip steps 1-2 (a rerun after they came back)
# 1. speed against the authors' code and the peers, per precision
if [ -n "$QUICK" ]; then SIZE_B=96x64; else SIZE_B=1920x1080; fi
for DTYPE in half bf16; do
  [ -n "$SKIP_SPEED" ] && continue
  "$PY" benchmarks/bench_speed.py --device "$DEVICE" --dtype "$DTYPE" --only a,b,c --size-b "$SIZE_B" $QUICK \
    --shared "$SHARED" --quiet --out "$OUT/bench_speed_$DTYPE" > /dev/null
  cat "$OUT/bench_speed_$DTYPE/bench_speed.md"
done

# 1b. where Table I x4's fp16 time goes (the 1.5x target): fp16 autocast (anchors.md's protocol) and fp16 weights,
#     channels-last as shipped / NCHW / one CUDA graph replayed, with the 25 busiest kernels of each first variant
if [ -n "$QUICK" ]; then LR_FORWARD=24x16; else LR_FORWARD=480x270; fi
[ -n "$SKIP_SPEED" ] || "$PY" benchmarks/bench_forward.py --preset mgbpv2-x4 mgbp-x4 --lr-size "$LR_FORWARD" \
  --device "$DEVICE" --precision autocast half --variants plain nchw cuda-graph --profile-top 25 \
  | tee "$OUT/bench_forward.jsonl" | cut -c 1-300 || echo "bench_forward: FAILED"

# 2. reduced precision: no NaN, no black frame, PSNR-Y within 0.05 dB of float32 (exit 1 otherwise: reported)
if [ -n "$QUICK" ]; then MAX_IMAGES=2; else MAX_IMAGES=14; fi
LOW_PRECISION_MODELS=(mgbp-x4 mgbp-x2)
if [ -f "$SHARED/reference/pirm2018/BOE-R3.model" ]; then LOW_PRECISION_MODELS+=("$SHARED/reference/pirm2018/BOE-R3.model"); fi
[ -n "$SKIP_SPEED" ] || "$PY" benchmarks/check_low_precision.py --device "$DEVICE" --dtype half bf16 --max-images "$MAX_IMAGES" \
  -m "${LOW_PRECISION_MODELS[@]}" --folder "$SHARED/data/images/Set14" | tee "$OUT/low_precision.jsonl" \
  || echo "check_low_precision: FAILED"

# 3. the x16 8K output within 8 GiB (CUDA only: the cap is a CUDA per-process fraction)
if [ "$DEVICE" != "cpu" ]; then
  for DTYPE in half bf16 float32; do
    "$PY" benchmarks/bench_tiled_memory.py --preset mgbpv2-x16 --lr-size 480x270 --device "$DEVICE" \
      --max-gpu-memory 8 --dtype "$DTYPE" 2>&1 | tail -n 1 | tee -a "$OUT/bench_x16_8k.jsonl" \
      || echo "bench_tiled_memory $DTYPE: did not fit (its last line above)"
  done
else
  "$PY" benchmarks/bench_tiled_memory.py --preset mgbpv2-x16 --lr-size 24x16 --device cpu \
    | tee -a "$OUT/bench_x16_8k.jsonl"
fi

# 4. training
TRAIN_OVERRIDES=(steps="$STEPS" export_dtype=float16 device="$DEVICE" output_dir="$RUN_DIR")
if [ -n "$MODEL" ]; then
  mkdir -p "$(dirname "$RUN_DIR")"
  "$PY" -m mgbp.cli convert "$MODEL" "$RUN_DIR-init.safetensors" --mu "$MU" --force
  TRAIN_OVERRIDES+=(init_from="$RUN_DIR-init.safetensors")
fi
if [ -n "$TRAIN_DATA" ]; then TRAIN_OVERRIDES+=("data.train=[$TRAIN_DATA]" data.workers=0); fi
# TRAIN_SECONDS > 0 bounds the run (the device call has a hard limit): SIGTERM makes `mgbp train` save last.pt,
# which comes back instead of the exported generator (export it here: python scripts/export_checkpoint.py
# OUT/run/last.pt runs/NAME/generator.safetensors --device "<card> x1", then scripts/ship_model.py).
if [ "${TRAIN_SECONDS:-0}" -gt 0 ]; then LIMIT=(timeout -s TERM "$TRAIN_SECONDS"); else LIMIT=(); fi
set +e
"${LIMIT[@]}" "$PY" -m mgbp.train "$GPU_CONFIG" "${TRAIN_OVERRIDES[@]}" --quiet > "$OUT/train_full.log" 2>&1
TRAIN_RC=$?
set -e
tail -n 40 "$OUT/train_full.log" | tee "$OUT/train.log"
if [ "$TRAIN_RC" -eq 0 ]; then
  cp "$RUN_DIR/generator.safetensors" "$RUN_DIR/config.yaml" "$RUN_DIR/log.jsonl" "$OUT/run/"
  cp "$RUN_DIR/generator.safetensors" "$OUT/generator.safetensors"
else
  echo "training stopped with exit status $TRAIN_RC: last.pt copied instead of the generator"
  cp "$RUN_DIR/last.pt" "$RUN_DIR/config.yaml" "$RUN_DIR/log.jsonl" "$OUT/run/" || true
fi
