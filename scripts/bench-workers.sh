#!/usr/bin/env bash
# Benchmark of the scale machinery on this machine:
#  1. `virb-host plan` on a ResNet-50 weights file (~98 MB): the first survey hashes the weights,
#     later ones find the hash remembered in the cache folder (path, inode, size, times);
#  2. one run of 4 units (2 experiments x 2 jobs) with one worker (`--devices cpu`, all threads)
#     against two CPU workers (`--devices cpu,cpu`, the threads divided), alternating, each on a
#     fresh --out and feature cache; prints every wall time, the medians and the ratio.
# On a 2-core machine two workers share the same two cores: expect a ratio near 1 (what it
# measures there is the scheduler's overhead); on a GPU box each worker has its own device.
#
#   PROFILE (release) CLASSES (5) TRAIN_PER_CLASS (24) TEST_PER_CLASS (12) IMAGE_SIZE (96)
#   EPOCHS (20) REPEATS (3)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
. scripts/env.sh
PROFILE=${PROFILE:-release}
scripts/build.sh "$PROFILE" >&2
CLASSES=${CLASSES:-5} TRAIN_PER_CLASS=${TRAIN_PER_CLASS:-24} TEST_PER_CLASS=${TEST_PER_CLASS:-12}
IMAGE_SIZE=${IMAGE_SIZE:-96} EPOCHS=${EPOCHS:-20} REPEATS=${REPEATS:-3}
work="$root/bench-work/workers-c$CLASSES-$TRAIN_PER_CLASS-$TEST_PER_CLASS-$IMAGE_SIZE"
host="$root/target/$PROFILE/virb-host"
if [ ! -f "$work/resnet50.pt" ]; then
  rm -rf "$work"
  for task in CalTech-101 Pets; do
    "$host" fixtures "$task" "$work/data" --classes "$CLASSES" --train-per-class "$TRAIN_PER_CLASS" \
      --test-per-class "$TEST_PER_CLASS" --image-size "$IMAGE_SIZE" >&2
  done
  "$VIRB_PYTHON_BIN" scripts/py/make_weights.py "$work/resnet50.pt" --calibrate-dir "$work/data" --calibrate-size 64
fi
cat > "$work/experiments.yaml" <<YAML
a: {weights: '$work/resnet50.pt', encoder: resnet50}
b: {weights: '$work/resnet50.pt', encoder: resnet50, options: {channels_last: false}}
YAML
job() {
  cat <<YAML
$1:
  task: $2
  training_configs:
    adam-0.001: {optimizer: adam, lr: 0.001}
    sgd-0.01: {optimizer: sgd, lr: 0.01, momentum: 0.9}
  num_epochs: $EPOCHS
  batch_size: 16
  image_size: $IMAGE_SIZE
YAML
}
{ job CalTech CalTech-101; job Pets Pets; } > "$work/virb.yaml"
args=(--experiment-list "$work/experiments.yaml" --virb-configs "$work/virb.yaml" --data-root "$work/data")
export OMP_WAIT_POLICY=PASSIVE
seconds() { python3 -c "import sys,time; print(f'{time.time()-float(sys.argv[1]):.2f}')" "$1"; }

echo "== plan (survey) with the weights' hash cold, then remembered"
rm -rf "$work/plan-cache"
for what in cold warm warm; do
  t0=$(python3 -c 'import time; print(time.time())')
  VIRB_FEATURE_CACHE="$work/plan-cache" "$host" plan "${args[@]}" --out "$work/plan-out" >/dev/null
  echo "plan ($what hash): $(seconds "$t0") s"
done

echo "== run: 4 units, one worker vs two CPU workers"
one=() two=()
for r in $(seq "$REPEATS"); do
  for devices in cpu cpu,cpu; do
    rm -rf "$work/out" "$work/cache"
    t0=$(python3 -c 'import time; print(time.time())')
    VIRB_FEATURE_CACHE="$work/cache" "$host" run "${args[@]}" --out "$work/out" --devices "$devices" \
      >"$work/run.log" 2>&1 || { tail -20 "$work/run.log"; exit 1; }
    s=$(seconds "$t0")
    echo "repeat $r, --devices $devices: $s s"
    if [ "$devices" = cpu ]; then one+=("$s"); else two+=("$s"); fi
  done
done
python3 - "${#one[@]}" "${one[@]}" "${two[@]}" <<'PY'
import statistics, sys
n = int(sys.argv[1]); v = list(map(float, sys.argv[2:]))
one, two = v[:n], v[n:]
m1, m2 = statistics.median(one), statistics.median(two)
print(f"median one worker {m1:.2f} s, two CPU workers {m2:.2f} s, ratio two/one {m2/m1:.2f}")
PY
