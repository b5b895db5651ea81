#!/usr/bin/env bash
# Benchmark: virb vs. the equivalent plain-PyTorch script, on the same generated data, weights and
# threads, in one run, alternating, REPEATS times each. Prints encode images/s and end-to-end wall
# time (process start to exit, so start-up, weight loading, decoding, encoding, training and
# evaluation all count) for both, their medians and the ratio.
#
#   CLASSES (5) TRAIN_PER_CLASS (24) TEST_PER_CLASS (16) IMAGE_SIZE (224) EPOCHS (30)
#   THREADS (2: libtorch intra-op threads for both) WORKERS (2: decode threads / DataLoader workers)
#   REPEATS (3)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
. scripts/env.sh
scripts/build.sh release >&2
CLASSES=${CLASSES:-5} TRAIN_PER_CLASS=${TRAIN_PER_CLASS:-24} TEST_PER_CLASS=${TEST_PER_CLASS:-16}
IMAGE_SIZE=${IMAGE_SIZE:-224} EPOCHS=${EPOCHS:-30} THREADS=${THREADS:-2} WORKERS=${WORKERS:-2}
REPEATS=${REPEATS:-3}
work="$root/bench-work/c$CLASSES-$TRAIN_PER_CLASS-$TEST_PER_CLASS"
host="$root/target/release/virb-host"
if [ ! -f "$work/data/caltech-101/caltech101_test.json" ]; then
  rm -rf "$work"
  "$host" fixtures CalTech-101 "$work/data" --force --classes "$CLASSES" --train-per-class "$TRAIN_PER_CLASS" \
    --test-per-class "$TEST_PER_CLASS" --image-size 256 >&2
  "$VIRB_PYTHON_BIN" scripts/py/make_weights.py "$work/resnet50.pt" --calibrate-dir "$work/data" --calibrate-size 112
fi
cat > "$work/experiments.yaml" <<YAML
bench: '$work/resnet50.pt'
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
now() { date +%s.%N; }
virb_walls=() torch_walls=() virb_ips=() torch_ips=()
for i in $(seq "$REPEATS"); do
  rm -rf "$work/out"
  t0=$(now)
  "$host" run --experiment-list "$work/experiments.yaml" --virb-configs "$work/virb.yaml" \
    --data-root "$work/data" --out "$work/out" --device cpu --threads "$THREADS" \
    --decode-workers "$WORKERS" --no-cache > "$work/virb.log" 2>&1
  t1=$(now)
  virb_walls+=("$(awk "BEGIN{print $t1 - $t0}")")
  virb_ips+=("$("$VIRB_PYTHON_BIN" -c "import json,sys; r=json.load(open(sys.argv[1])); print((r['train_size']+r['test_size'])/r['timings_s']['encode_wall'])" "$work/out/bench/CalTech-101-adam-0.001/results.json")")
  t0=$(now)
  out=$("$VIRB_PYTHON_BIN" scripts/py/bench_pytorch.py "$work/data" "$work/resnet50.pt" --image-size "$IMAGE_SIZE" \
    --epochs "$EPOCHS" --batch-size 32 --threads "$THREADS" --workers "$WORKERS")
  t1=$(now)
  torch_walls+=("$(awk "BEGIN{print $t1 - $t0}")")
  torch_ips+=("$(echo "$out" | "$VIRB_PYTHON_BIN" -c "import json,sys; print(json.loads(sys.stdin.read())['encode_images_per_s'])")")
  echo "run $i: virb ${virb_walls[-1]}s (${virb_ips[-1]} img/s), pytorch ${torch_walls[-1]}s (${torch_ips[-1]} img/s)" >&2
done
images=$((CLASSES * (TRAIN_PER_CLASS + TEST_PER_CLASS)))
"$VIRB_PYTHON_BIN" - "${virb_walls[*]}" "${torch_walls[*]}" "${virb_ips[*]}" "${torch_ips[*]}" <<PY
import statistics, sys
vw, tw, vi, ti = ([float(x) for x in a.split()] for a in sys.argv[1:5])
m = statistics.median
print(f"{$images} images at {$IMAGE_SIZE}px, {$EPOCHS} probe epochs, {$THREADS} libtorch threads, {$WORKERS} decode workers; medians of {len(vw)} alternating runs")
print(f"encode images/s   virb {m(vi):7.2f}   pytorch {m(ti):7.2f}   ratio {m(vi)/m(ti):.2f}x")
print(f"end-to-end wall s virb {m(vw):7.2f}   pytorch {m(tw):7.2f}   ratio {m(tw)/m(vw):.2f}x (pytorch/virb; >1 = virb faster)")
PY
