#!/usr/bin/env bash
# Benchmark of the pixel-wise path, on virb's THORDepth fixture (ViRB's PixelWise head on the
# ResNet-50 pyramid), all in one run on this machine, REPEATS times each, medians:
#   1. seconds per epoch training from the cached pyramid vs. live encoding (1 config; the per-epoch
#      time is (wall at 3 epochs - wall at 1 epoch) / 2, so start-up and caching do not count);
#   2. wall time of a grid of CONFIGS configs live vs. 1 config live (one forward serves all heads);
#   3. virb end to end (CONFIGS configs, cached pyramid) vs. the plain-PyTorch ViRB-style probe that
#      re-runs the encoder every batch of every config (scripts/py/bench_dense_pytorch.py).
#
#   TRAIN (32) TEST (8) IMAGE_SIZE (65) CONFIGS (4) BATCH (4) THREADS (2) WORKERS (2) REPEATS (1)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
. scripts/env.sh
scripts/build.sh release >&2
TRAIN=${TRAIN:-32} TEST=${TEST:-8} IMAGE_SIZE=${IMAGE_SIZE:-65} CONFIGS=${CONFIGS:-4}
BATCH=${BATCH:-4} THREADS=${THREADS:-2} WORKERS=${WORKERS:-2} REPEATS=${REPEATS:-1}
work="$root/bench-work/dense-$TRAIN-$TEST-$IMAGE_SIZE"
host="$root/target/release/virb-host"
if [ ! -d "$work/data/thor_depth_prediction" ]; then
  rm -rf "$work"
  # 4 scene folders; TRAIN/4 and TEST/4 samples each.
  "$host" fixtures THORDepth "$work/data" --force --classes 4 --train-per-class $((TRAIN / 4)) \
    --test-per-class $((TEST / 4)) --image-size "$IMAGE_SIZE" >&2
  "$VIRB_PYTHON_BIN" scripts/py/make_weights.py "$work/resnet50.pt" --calibrate-dir "$work/data" \
    --calibrate-size "$IMAGE_SIZE"
fi
echo "bench: '$work/resnet50.pt'" > "$work/experiments.yaml"
job() { # configs epochs pre_encode
  {
    echo "THORDepth:"
    echo "  task: THORDepth"
    echo "  pre_encode: $3"
    echo "  training_configs:"
    for k in $(seq "$1"); do
      echo "    adam-$k: {optimizer: adam, lr: $(awk "BEGIN{print 0.0003 / $k}")}"
    done
    echo "  num_epochs: $2"
    echo "  batch_size: $BATCH"
    echo "  image_size: $IMAGE_SIZE"
  } > "$work/virb.yaml"
}
now() { date +%s.%N; }
virb() { # configs epochs pre_encode -> wall seconds (fresh out/ and cache: caching counts)
  job "$@"
  rm -rf "$work/out" "$work/cache"
  local t0 t1
  t0=$(now)
  VIRB_FEATURE_CACHE="$work/cache" "$host" run --experiment-list "$work/experiments.yaml" \
    --virb-configs "$work/virb.yaml" --data-root "$work/data" --out "$work/out" --device cpu \
    --threads "$THREADS" --decode-workers "$WORKERS" > "$work/virb.log" 2>&1
  t1=$(now)
  awk "BEGIN{print $t1 - $t0}"
}
declare -A w
for i in $(seq "$REPEATS"); do
  w[cached1]+=" $(virb 1 1 true)"; w[cached3]+=" $(virb 1 3 true)"
  w[live1]+=" $(virb 1 1 false)"; w[live3]+=" $(virb 1 3 false)"
  w[grid_live]+=" $(virb "$CONFIGS" 2 false)"; w[one_live]+=" $(virb 1 2 false)"
  w[grid_cached]+=" $(virb "$CONFIGS" 2 true)"
  t0=$(now)
  "$VIRB_PYTHON_BIN" scripts/py/bench_dense_pytorch.py "$work/data" "$work/resnet50.pt" \
    --image-size "$IMAGE_SIZE" --epochs 2 --batch-size "$BATCH" --configs "$CONFIGS" \
    --threads "$THREADS" --workers "$WORKERS" > "$work/torch.json"
  t1=$(now)
  w[torch]+=" $(awk "BEGIN{print $t1 - $t0}")"
  echo "repeat $i: $(for k in "${!w[@]}"; do printf '%s=%s ' "$k" "${w[$k]##* }"; done)" >&2
done
"$VIRB_PYTHON_BIN" - "${w[cached1]}" "${w[cached3]}" "${w[live1]}" "${w[live3]}" "${w[grid_live]}" \
  "${w[one_live]}" "${w[grid_cached]}" "${w[torch]}" "$CONFIGS" <<'PY'
import statistics as st, sys
m = [st.median(float(x) for x in a.split()) for a in sys.argv[1:9]]
cached1, cached3, live1, live3, grid_live, one_live, grid_cached, torch = m
k = sys.argv[9]
cached_epoch, live_epoch = (cached3 - cached1) / 2, (live3 - live1) / 2
print(f"per epoch, 1 config: cached pyramid {cached_epoch:.2f} s, live {live_epoch:.2f} s: live/cached {live_epoch / cached_epoch:.2f}x")
print(f"live, 2 epochs: {k} configs {grid_live:.1f} s, 1 config {one_live:.1f} s: ratio {grid_live / one_live:.2f}x")
print(f"end to end, {k} configs x 2 epochs: virb (cached) {grid_cached:.1f} s, virb (live) {grid_live:.1f} s, plain PyTorch ViRB-style {torch:.1f} s: PyTorch/virb {torch / grid_cached:.2f}x (cached), {torch / grid_live:.2f}x (live)")
PY
