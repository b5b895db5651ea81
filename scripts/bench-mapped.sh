#!/usr/bin/env bash
# Benchmark of training from a memory-mapped pyramid cache larger than memory should hold:
# THORDepth (ViRB's PixelWise head on all five levels of ARCH's pyramid) with TRAIN training
# images at 224 px and a memory budget of MEMORY_BUDGET (default 256M), so the pyramid is read
# from the map batch by batch. ARCH resnet18 (default): 2.36 MB of float16 per image, TRAIN 3600
# gives an 8.5 GB cache file; ARCH resnet50: 4.6 MB per image (TRAIN 1800: 8.3 GB), but its
# ~100 M-parameter head makes an epoch take ~25 min on 2 CPU cores.
#
#   run 1: encode the train and test splits into the cache file, then train EPOCHS epoch(s);
#   run 2: the same job again with --force: verify the cache file (one pass over its chunks),
#          then train from it.
# For each run: wall seconds, peak RSS (GNU time's maximum resident set size) and the head's
# training seconds (results.json timings_s.train), i.e. seconds per epoch.
#
#   ARCH (resnet18) TRAIN (3600 for resnet18, 1800 for resnet50) TEST (8) IMAGE_SIZE (224)
#   EPOCHS (1) BATCH (16) THREADS (2) WORKERS (2)
#   MEMORY_BUDGET (256M) WORK (bench-work/mapped)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
. scripts/env.sh
scripts/build.sh release >&2
ARCH=${ARCH:-resnet18}
if [ "$ARCH" = resnet18 ]; then TRAIN=${TRAIN:-3600}; else TRAIN=${TRAIN:-1800}; fi
TEST=${TEST:-8} IMAGE_SIZE=${IMAGE_SIZE:-224} EPOCHS=${EPOCHS:-1}
BATCH=${BATCH:-16} THREADS=${THREADS:-2} WORKERS=${WORKERS:-2} MEMORY_BUDGET=${MEMORY_BUDGET:-256M}
work="${WORK:-$root/bench-work/mapped}"
host="$root/target/release/virb-host"
mkdir -p "$work"
if [ ! -f "$work/.fixture-$ARCH-$TRAIN-$TEST" ]; then
  rm -rf "$work/data" "$work/cache"
  # 4 scene folders; the fixture is drawn at 96 px and resized to IMAGE_SIZE by the task.
  "$host" fixtures THORDepth "$work/data" --force --classes 4 --train-per-class $((TRAIN / 4)) \
    --test-per-class $((TEST / 4)) --image-size 96 >&2
  "$VIRB_PYTHON_BIN" scripts/py/make_weights.py "$work/$ARCH.pt" --arch "$ARCH" \
    --calibrate-dir "$work/data" --calibrate-size 96 >&2
  touch "$work/.fixture-$ARCH-$TRAIN-$TEST"
fi
echo "bench: {weights: '$work/$ARCH.pt', encoder: $ARCH}" > "$work/experiments.yaml"
cat > "$work/virb.yaml" <<EOF
THORDepth:
  task: THORDepth
  pre_encode: true
  training_configs:
    adam: {optimizer: adam, lr: 0.0003}
  num_epochs: $EPOCHS
  batch_size: $BATCH
  image_size: $IMAGE_SIZE
EOF
run() { # label, extra args
  local label=$1
  shift
  /usr/bin/time -f "%e %M" -o "$work/time.txt" env VIRB_FEATURE_CACHE="$work/cache" "$host" run \
    --experiment-list "$work/experiments.yaml" --virb-configs "$work/virb.yaml" \
    --data-root "$work/data" --out "$work/out" --device cpu --threads "$THREADS" \
    --decode-workers "$WORKERS" --memory-budget "$MEMORY_BUDGET" --cache-budget 64G \
    --checkpoint-every 100000 "$@" > "$work/$label.log" 2>&1
  read -r wall rss_kb < "$work/time.txt"
  "$VIRB_PYTHON_BIN" - "$label" "$wall" "$rss_kb" "$work" "$EPOCHS" <<'PY'
import json, os, sys
label, wall, rss_kb, work, epochs = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
r = json.load(open(os.path.join(work, "out/bench/THORDepth-adam/results.json")))
t = r["timings_s"]
cache = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(os.path.join(work, "cache")) for f in fs)
print(f"{label}: wall {wall:.0f} s, peak RSS {rss_kb / 1024 ** 2:.2f} GiB, cache {cache / 1e9:.2f} GB, "
      f"features {t['features']}, encode {t['encode_wall']:.0f} s, train {t['train'] / epochs:.0f} s per epoch "
      f"({r['train_size']} images), test l1 {r['test_metrics']['l1']:.4f}")
PY
}
rm -rf "$work/out" "$work/cache"
run encode-and-train
run cached --force
