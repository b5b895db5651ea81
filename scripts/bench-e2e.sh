#!/usr/bin/env bash
# Benchmark: virb vs. the equivalent plain-PyTorch script (scripts/py/bench_pytorch.py: PIL +
# torchvision transforms in a DataLoader, eager ResNet-50, features kept, Linear probe with Adam),
# on the same generated CalTech-101 set, weights and threads, in one run, alternating, REPEATS
# times each, for each precision in PRECISIONS. Prints encode images/s, end-to-end wall time
# (process start to exit: start-up, weight loading, decoding, encoding, training and evaluation
# all count) and top-1 accuracy for both, medians, and their ratios. With BENCH_TSV set, appends
# the table's rows there (scripts/bench.sh collects them).
#
#   CLASSES (5) TRAIN_PER_CLASS (24) TEST_PER_CLASS (16) IMAGE_SIZE (224) EPOCHS (30)
#   THREADS (2: libtorch intra-op threads for both) WORKERS (2: decode threads / DataLoader workers)
#   REPEATS (3) PRECISIONS ("fp32"; "fp32 bf16" adds bf16 inference on both sides)
#   BF16_REPEATS (REPEATS: bf16 is ~6x slower than fp32 on a CPU without bf16 instructions)
#   LR (0.001: Adam's learning rate for both probes) SEEDS (1: each run trains the probe with seeds
#   0..SEEDS-1 on the same features, virb's `repeats`; the accuracy rows then give mean +- sample
#   standard deviation over seeds, and their difference in standard errors)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
. scripts/env.sh
scripts/build.sh release >&2
CLASSES=${CLASSES:-5} TRAIN_PER_CLASS=${TRAIN_PER_CLASS:-24} TEST_PER_CLASS=${TEST_PER_CLASS:-16}
IMAGE_SIZE=${IMAGE_SIZE:-224} EPOCHS=${EPOCHS:-30} THREADS=${THREADS:-2} WORKERS=${WORKERS:-2}
REPEATS=${REPEATS:-3} PRECISIONS=${PRECISIONS:-fp32} BF16_REPEATS=${BF16_REPEATS:-${REPEATS:-3}}
LR=${LR:-0.001} SEEDS=${SEEDS:-1}
work="$root/bench-work/c$CLASSES-$TRAIN_PER_CLASS-$TEST_PER_CLASS"
host="$root/target/release/virb-host"
if [ ! -f "$work/data/caltech-101/caltech101_test.json" ]; then
  rm -rf "$work"
  "$host" fixtures CalTech-101 "$work/data" --force --classes "$CLASSES" --train-per-class "$TRAIN_PER_CLASS" \
    --test-per-class "$TEST_PER_CLASS" --image-size 256 >&2
  "$VIRB_PYTHON_BIN" scripts/py/make_weights.py "$work/resnet50.pt" --calibrate-dir "$work/data" --calibrate-size 112
fi
cat > "$work/virb.yaml" <<YAML
CalTech-101:
  task: CalTech-101
  training_configs:
    adam: {optimizer: adam, lr: $LR}
  num_epochs: $EPOCHS
  repeats: $SEEDS
  batch_size: 32
  image_size: $IMAGE_SIZE
YAML
now() { date +%s.%N; }
images=$(( (TRAIN_PER_CLASS + TEST_PER_CLASS) * CLASSES ))
summary=()
for precision in $PRECISIONS; do
  cat > "$work/experiments.yaml" <<YAML
bench:
  weights: '$work/resnet50.pt'
  encoder: resnet50
  options: {precision: $precision}
YAML
  vw=() tw=() vi=() ti=() va=() ta=() vs=() ts=()
  repeats=$REPEATS
  [ "$precision" = bf16 ] && repeats=$BF16_REPEATS
  for i in $(seq "$repeats"); do
    rm -rf "$work/out"
    t0=$(now)
    # VIRB_NO_RERUN_STAMP: the out/ folder is removed before each run anyway; no stamp to write.
    VIRB_NO_RERUN_STAMP=1 "$host" run --experiment-list "$work/experiments.yaml" --virb-configs "$work/virb.yaml" \
      --data-root "$work/data" --out "$work/out" --device cpu --threads "$THREADS" \
      --decode-workers "$WORKERS" --no-cache > "$work/virb.log" 2>&1
    t1=$(now)
    vw+=("$(awk "BEGIN{print $t1 - $t0}")")
    read -r ips acc sd < <("$VIRB_PYTHON_BIN" -c "import json,sys; r=json.load(open(sys.argv[1])); print((r['train_size']+r['test_size'])/r['timings_s']['encode_wall'], r['test_metrics']['top1_accuracy'], r.get('test_metrics_std', {}).get('top1_accuracy', 0.0))" "$work/out/bench/CalTech-101-adam/results.json")
    vi+=("$ips") va+=("$acc") vs+=("$sd")
    t0=$(now)
    out=$("$VIRB_PYTHON_BIN" scripts/py/bench_pytorch.py "$work/data" "$work/resnet50.pt" --image-size "$IMAGE_SIZE" \
      --epochs "$EPOCHS" --batch-size 32 --lr "$LR" --seeds "$SEEDS" --threads "$THREADS" --workers "$WORKERS" \
      --precision "$precision")
    t1=$(now)
    tw+=("$(awk "BEGIN{print $t1 - $t0}")")
    read -r ips acc sd < <(echo "$out" | "$VIRB_PYTHON_BIN" -c "import json,sys; r=json.loads(sys.stdin.read()); print(r['encode_images_per_s'], r['top1_accuracy'], r['top1_accuracy_std'])")
    ti+=("$ips") ta+=("$acc") ts+=("$sd")
    echo "$precision run $i: virb ${vw[-1]}s (${vi[-1]} img/s, top-1 ${va[-1]}), pytorch ${tw[-1]}s (${ti[-1]} img/s, top-1 ${ta[-1]})" >&2
  done
  summary+=("$precision|${vw[*]}|${tw[*]}|${vi[*]}|${ti[*]}|${va[*]}|${ta[*]}|${vs[*]}|${ts[*]}")
done
"$VIRB_PYTHON_BIN" - "$images" "$IMAGE_SIZE" "$EPOCHS" "$THREADS" "$WORKERS" "${BENCH_TSV:-}" "$SEEDS" "$LR" "${summary[@]}" <<'PY'
import math, statistics, sys
images, size, epochs, threads, workers, tsv, seeds, lr = sys.argv[1:9]
seeds = int(seeds)
m = statistics.median
rows, fp32_virb = [], None
print(f"{images} images at {size} px, {epochs} probe epochs (Adam, lr {lr}, {seeds} seed(s)), {threads} libtorch threads, {workers} decode workers; medians of alternating runs")
for entry in sys.argv[9:]:
    prec, *lists = entry.split("|")
    vw, tw, vi, ti, va, ta, vs, ts = ([float(x) for x in a.split()] for a in lists)
    print(f"{prec}: encode images/s   virb {m(vi):7.2f}   pytorch {m(ti):7.2f}   ratio {m(vi)/m(ti):.2f}x")
    print(f"{prec}: end-to-end wall s virb {m(vw):7.2f}   pytorch {m(tw):7.2f}   ratio {m(tw)/m(vw):.2f}x (pytorch/virb; >1 = virb faster)")
    print(f"{prec}: top-1 accuracy    virb {m(va):7.4f}   pytorch {m(ta):7.4f}")
    n = len(vw)
    rows.append((f"encode {prec}, ResNet-50, {images} img at {size} px", f"{m(vi):.1f} img/s", f"{m(ti):.1f} img/s", f"{m(vi)/m(ti):.2f}x", ">= 1.0x" if prec == "fp32" else ">= 2x virb fp32", n))
    if prec == "fp32":
        fp32_virb = m(vi)
    elif fp32_virb:
        rows.append((f"encode {prec} / virb fp32", f"{m(vi):.1f} / {fp32_virb:.1f} img/s", "", f"{m(vi)/fp32_virb:.2f}x", ">= 2x", n))
    rows.append((f"end to end {prec}, {images} img at {size} px, {epochs} epochs", f"{m(vw):.2f} s", f"{m(tw):.2f} s", f"{m(tw)/m(vw):.2f}x", ">= 2x", n))
    if seeds > 1:
        # Each side's standard deviation over seeds (median over runs); the difference of the
        # means in standard errors of that difference.
        sv, st = m(vs), m(ts)
        se = math.sqrt((sv**2 + st**2) / seeds)
        diff = m(va) - m(ta)
        z = f"{abs(diff) / se:.1f} SE" if se > 0 else "exact"
        print(f"{prec}: top-1 over {seeds} seeds virb {m(va):.4f} +- {sv:.4f}   pytorch {m(ta):.4f} +- {st:.4f}   difference {diff:+.4f} ({z})")
        rows.append((f"top-1 {prec}, mean +- std over {seeds} seeds, {images} img, lr {lr}, {epochs} epochs", f"{m(va):.4f} +- {sv:.4f}", f"{m(ta):.4f} +- {st:.4f}", f"{diff:+.4f} ({z})", "within noise (< 2 SE)", n))
    else:
        rows.append((f"top-1 accuracy {prec} (same data and weights)", f"{m(va):.4f}", f"{m(ta):.4f}", "", "within noise", n))
if tsv:
    with open(tsv, "a") as f:
        for r in rows:
            f.write("\t".join(str(x) for x in r) + "\n")
PY
