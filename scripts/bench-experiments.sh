#!/usr/bin/env bash
# Benchmarks of the experiment machinery, virb against itself on the same machine, alternating,
# REPEATS times each, medians (process start to exit):
#
#  1. grid: one job with 1 training config vs. the same job with 8 configs (all configs train in
#     one pass over the features), both with a cold feature cache (encode + train) and with a
#     warm one (read the cache + train); the goal is 8 configs <= 1.5x the wall time of 1.
#  2. cache: the demo job (scripts/demo.sh's data and weights) run cold (empty cache, empty
#     --out), then the identical command again (results complete: skipped), then with --force
#     (every config retrained on cached features); the goal is a second run >= 20x faster.
#
#   CLASSES (12, the most the fixture generator writes) TRAIN_PER_CLASS (40) TEST_PER_CLASS (10) IMAGE_SIZE (64) EPOCHS (30)
#   THREADS (2) WORKERS (2) REPEATS (3) BENCH_TSV (append the results as rows for scripts/bench.sh)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
. scripts/env.sh
scripts/build.sh release >&2
CLASSES=${CLASSES:-12} TRAIN_PER_CLASS=${TRAIN_PER_CLASS:-40} TEST_PER_CLASS=${TEST_PER_CLASS:-10}
IMAGE_SIZE=${IMAGE_SIZE:-64} EPOCHS=${EPOCHS:-30} THREADS=${THREADS:-2} WORKERS=${WORKERS:-2}
REPEATS=${REPEATS:-3}
tsv="${BENCH_TSV:-}"
host="$root/target/release/virb-host"
work="$root/bench-work/grid-c$CLASSES-$TRAIN_PER_CLASS-$TEST_PER_CLASS"
if [ ! -f "$work/data/caltech-101/caltech101_test.json" ]; then
  rm -rf "$work"
  "$host" fixtures CalTech-101 "$work/data" --force --classes "$CLASSES" --train-per-class "$TRAIN_PER_CLASS" \
    --test-per-class "$TEST_PER_CLASS" --image-size 96 >&2
  "$VIRB_PYTHON_BIN" scripts/py/make_weights.py "$work/resnet50.pt" --calibrate-dir "$work/data" --calibrate-size "$IMAGE_SIZE"
fi
echo "bench: '$work/resnet50.pt'" > "$work/experiments.yaml"
grid() { # $1: number of configs
  echo "CalTech-101:"
  echo "  task: CalTech-101"
  echo "  training_configs:"
  local lrs=(0.001 0.0003 0.003 0.0001) i=0
  for opt in adam sgd; do
    for lr in "${lrs[@]}"; do
      [ "$i" -lt "$1" ] || break
      if [ "$opt" = sgd ]; then lr=$(awk "BEGIN{print $lr * 30}"); fi
      echo "    $opt-$lr: {optimizer: $opt, lr: $lr, momentum: $([ "$opt" = sgd ] && echo 0.9 || echo null)}" | sed 's/, momentum: null//'
      i=$((i + 1))
    done
  done
  echo "  num_epochs: $EPOCHS"
  echo "  batch_size: 32"
  echo "  image_size: $IMAGE_SIZE"
}
grid 1 > "$work/virb-1.yaml"
grid 8 > "$work/virb-8.yaml"
now() { date +%s.%N; }
run() { # $1: config count, $2: cold|warm; prints wall seconds
  rm -rf "$work/out"
  if [ "$2" = cold ]; then rm -rf "$work/cache"; fi
  local t0 t1
  t0=$(now)
  "$host" run --experiment-list "$work/experiments.yaml" --virb-configs "$work/virb-$1.yaml" \
    --data-root "$work/data" --out "$work/out" --device cpu --threads "$THREADS" \
    --decode-workers "$WORKERS" --cache-dir "$work/cache" > "$work/run-$1-$2.log" 2>&1
  t1=$(now)
  awk "BEGIN{print $t1 - $t0}"
}
declare -A walls
for i in $(seq "$REPEATS"); do
  for mode in cold warm; do
    for n in 1 8; do
      # A warm run needs the cache the cold run of this repeat left.
      w=$(run "$n" "$mode")
      walls[$n-$mode]+="$w "
      echo "grid run $i: $n config(s), $mode cache: ${w}s" >&2
    done
  done
done

# 2. The demo: cold, identical rerun, --force.
demo="$root/demo"
if [ ! -f "$demo/resnet50.pt" ] || [ ! -f "$demo/data/caltech-101/caltech101_test.json" ]; then
  "$host" fixtures CalTech-101 "$demo/data" --force --classes 5 --train-per-class 12 --test-per-class 8 --image-size 96 >&2
  "$VIRB_PYTHON_BIN" scripts/py/make_weights.py "$demo/resnet50.pt.tmp" --calibrate-dir "$demo/data" --calibrate-size 112
  mv "$demo/resnet50.pt.tmp" "$demo/resnet50.pt"
fi
demo_run() {
  local t0 t1
  t0=$(now)
  "$host" run --experiment-list configs/experiment_lists/demo.yaml --virb-configs configs/virb_configs/demo.yaml \
    --data-root "$demo/data" --out "$work/demo-out" --device cpu --threads "$THREADS" \
    --decode-workers "$WORKERS" --cache-dir "$work/demo-cache" "$@" > "$work/demo.log" 2>&1
  t1=$(now)
  awk "BEGIN{print $t1 - $t0}"
}
declare -a d_cold d_same d_force
for i in $(seq "$REPEATS"); do
  rm -rf "$work/demo-out" "$work/demo-cache"
  d_cold+=("$(demo_run)")
  d_same+=("$(demo_run)")
  d_force+=("$(demo_run --force)")
  echo "demo run $i: cold ${d_cold[-1]}s, identical rerun ${d_same[-1]}s, --force ${d_force[-1]}s" >&2
done
sizes=$("$VIRB_PYTHON_BIN" -c "import json,glob; r=json.load(open(glob.glob('$work/out/bench/*/results.json')[0])); print(r['train_size'], r['test_size'])")
"$VIRB_PYTHON_BIN" - "${walls[1-cold]}" "${walls[8-cold]}" "${walls[1-warm]}" "${walls[8-warm]}" \
  "${d_cold[*]}" "${d_same[*]}" "${d_force[*]}" <<PY
import statistics, sys
c1, c8, w1, w8, dc, ds, df = ([float(x) for x in a.split()] for a in sys.argv[1:8])
m = statistics.median
train, test = "$sizes".split()
print(f"grid ({train} train / {test} test images at {$IMAGE_SIZE} px, {$EPOCHS} epochs, {$THREADS} threads, medians of {len(c1)}):")
print(f"  cold cache (encode + train): 1 config {m(c1):.2f} s, 8 configs {m(c8):.2f} s, ratio {m(c8)/m(c1):.2f}x")
print(f"  warm cache (read + train):   1 config {m(w1):.2f} s, 8 configs {m(w8):.2f} s, ratio {m(w8)/m(w1):.2f}x (goal <= 1.5x)")
print(f"demo (configs/virb_configs/demo.yaml, medians of {len(dc)}):")
print(f"  first run {m(dc):.2f} s; identical rerun {m(ds):.3f} s ({m(dc)/m(ds):.1f}x faster); --force on cached features {m(df):.2f} s ({m(dc)/m(df):.1f}x faster) (goal >= 20x)")
if "$tsv":
    n = len(c1)
    with open("$tsv", "a") as f:
        for r in (
            (f"grid, warm cache: 8 configs / 1 ({train} train img, {$EPOCHS} epochs)", f"{m(w8):.2f} / {m(w1):.2f} s", "", f"{m(w8)/m(w1):.2f}x", "<= 1.5x", n),
            (f"grid, cold cache: 8 configs / 1", f"{m(c8):.2f} / {m(c1):.2f} s", "", f"{m(c8)/m(c1):.2f}x", "", n),
            ("demo: first run / identical rerun", f"{m(dc):.2f} / {m(ds):.3f} s", "", f"{m(dc)/m(ds):.0f}x", ">= 20x", n),
            ("demo: first run / --force on cached features", f"{m(dc):.2f} / {m(df):.2f} s", "", f"{m(dc)/m(df):.1f}x", "", n),
        ):
            f.write("\t".join(str(x) for x in r) + "\n")
PY
