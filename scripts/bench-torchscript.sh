#!/usr/bin/env bash
# Benchmark: the `torchscript` encoder on a torch.jit.trace of torchvision's ResNet-50 against the
# native `resnet50` plugin on the same weights, on the same generated CalTech-101 data and threads.
# Release build; REPEATS alternating `virb-host run`s of each (no feature cache); prints encode
# images/s (train + test images over the encode wall time, from results.json), the medians and
# the ratio torchscript / native.
#
#   CLASSES (5) TRAIN_PER_CLASS (24) TEST_PER_CLASS (16) IMAGE_SIZE (224) EPOCHS (1)
#   THREADS (2: libtorch intra-op threads) WORKERS (2: decode threads) REPEATS (3)
#   TS_OPTIONS ({channels_last: true}: the torchscript experiment's options; the native plugin
#   runs channels-last by default, so this compares the same kernels)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
. scripts/env.sh
scripts/build.sh release >&2
CLASSES=${CLASSES:-5} TRAIN_PER_CLASS=${TRAIN_PER_CLASS:-24} TEST_PER_CLASS=${TEST_PER_CLASS:-16}
IMAGE_SIZE=${IMAGE_SIZE:-224} EPOCHS=${EPOCHS:-1} THREADS=${THREADS:-2} WORKERS=${WORKERS:-2}
REPEATS=${REPEATS:-3} TS_OPTIONS=${TS_OPTIONS:-"{channels_last: true}"}
work="$root/bench-work/torchscript-c$CLASSES-$TRAIN_PER_CLASS-$TEST_PER_CLASS"
host="$root/target/release/virb-host"
if [ ! -f "$work/resnet.ts" ]; then
  rm -rf "$work"
  "$host" fixtures CalTech-101 "$work/data" --force --classes "$CLASSES" --train-per-class "$TRAIN_PER_CLASS" \
    --test-per-class "$TEST_PER_CLASS" --image-size 256 >&2
  "$VIRB_PYTHON_BIN" scripts/py/make_weights.py "$work/resnet50.pt" --calibrate-dir "$work/data" --calibrate-size 112
  "$VIRB_PYTHON_BIN" scripts/py/export_torchscript.py "$work" --resnet-weights "$work/resnet50.pt" --only-resnet
fi
cat > "$work/native.yaml" <<YAML
bench: {weights: '$work/resnet50.pt', encoder: resnet50}
YAML
cat > "$work/torchscript.yaml" <<YAML
bench: {weights: '$work/resnet.ts', encoder: torchscript, options: $TS_OPTIONS}
YAML
cat > "$work/virb.yaml" <<YAML
CalTech-101:
  task: CalTech-101
  training_configs:
    adam-0.001: {optimizer: adam, lr: 0.001}
  num_epochs: $EPOCHS
  batch_size: 32
  image_size: $IMAGE_SIZE
YAML
# Runs one experiment list; prints its encode images/s.
encode_ips() {
  rm -rf "$work/out"
  "$host" run --experiment-list "$work/$1.yaml" --virb-configs "$work/virb.yaml" \
    --data-root "$work/data" --out "$work/out" --device cpu --threads "$THREADS" \
    --decode-workers "$WORKERS" --no-cache > "$work/$1.log" 2>&1
  "$VIRB_PYTHON_BIN" -c "import json,sys; r=json.load(open(sys.argv[1])); print((r['train_size']+r['test_size'])/r['timings_s']['encode_wall'])" \
    "$work/out/bench/CalTech-101-adam-0.001/results.json"
}
native=() scripted=()
for i in $(seq "$REPEATS"); do
  native+=("$(encode_ips native)")
  scripted+=("$(encode_ips torchscript)")
  echo "run $i: native ${native[-1]} img/s, torchscript ${scripted[-1]} img/s" >&2
done
images=$((CLASSES * (TRAIN_PER_CLASS + TEST_PER_CLASS)))
"$VIRB_PYTHON_BIN" - "${native[*]}" "${scripted[*]}" "$TS_OPTIONS" <<PY
import statistics, sys
n, t = ([float(x) for x in a.split()] for a in sys.argv[1:3])
m = statistics.median
print(f"{$images} images at {$IMAGE_SIZE}px, {$THREADS} libtorch threads, {$WORKERS} decode workers, torchscript options {sys.argv[3]}; medians of {len(n)} alternating runs")
print(f"encode images/s   native resnet50 {m(n):7.2f}   torchscript {m(t):7.2f}   ratio {m(t)/m(n):.3f} (torchscript/native)")
PY
