#!/usr/bin/env bash
# Training a linear head from an ImageNet-sized embedding cache (1.28 M x 2048 float16 = 5.2 GB)
# that the memory budget does not hold, against the same head trained by plain PyTorch from an
# in-memory tensor (scripts/py/bench_memory_pytorch.py), on the same machine, one after the other.
#
# The data set (scripts/py/make_embedding_set.py): CalTech-101's layout with CLASSES classes and
# TRAIN + TEST samples, every sample of a class a hard link to one small PNG, and a TorchScript
# encoder (a fixed random Linear from the pixels to DIM features), so that the cache has
# ImageNet's size without ImageNet.
#   run 1: encode both splits (the train split into a memory-mapped cache file), train EPOCHS;
#   run 2: --force: verify the cache file, train EPOCHS from the map.
# For each run: wall seconds, peak RSS (GNU time), and the head's training seconds per epoch
# (results.json timings_s.train / EPOCHS).
#
#   TRAIN (1281167) TEST (50000) CLASSES (1000) DIM (2048) IMAGE (16) EPOCHS (1) BATCH (256)
#   MEMORY_BUDGET (1G) THREADS (2) WORKERS (2) WORK (bench-work/memory) BENCH_TSV (rows for bench.sh)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
. scripts/env.sh
scripts/build.sh release >&2
TRAIN=${TRAIN:-1281167} TEST=${TEST:-50000} CLASSES=${CLASSES:-1000} DIM=${DIM:-2048} IMAGE=${IMAGE:-16}
EPOCHS=${EPOCHS:-1} BATCH=${BATCH:-256} MEMORY_BUDGET=${MEMORY_BUDGET:-1G} THREADS=${THREADS:-2}
WORKERS=${WORKERS:-2}
work="${WORK:-$root/bench-work/memory}"
host="$root/target/release/virb-host"
mkdir -p "$work"
stamp="$work/.set-$TRAIN-$TEST-$CLASSES-$IMAGE-$DIM"
if [ ! -f "$stamp" ]; then
  rm -rf "$work/data" "$work/cache" "$work/out"
  echo "writing the data set ($TRAIN + $TEST hard links) and the encoder" >&2
  "$VIRB_PYTHON_BIN" scripts/py/make_embedding_set.py "$work" "$TRAIN" "$TEST" "$CLASSES" "$IMAGE" "$DIM"
  touch "$stamp"
fi
cat > "$work/experiments.yaml" <<YAML
embeddings:
  weights: '$work/encoder.ts'
  encoder: torchscript
YAML
cat > "$work/virb.yaml" <<YAML
CalTech-101:
  task: CalTech-101
  training_configs:
    adam-0.001: {optimizer: adam, lr: 0.001}
  num_epochs: $EPOCHS
  batch_size: $BATCH
  image_size: $IMAGE
YAML
rm -rf "$work/cache" "$work/out"
runs=()
for extra in "" "--force"; do
  # shellcheck disable=SC2086
  VIRB_NO_RERUN_STAMP=1 /usr/bin/time -f "%e %M" -o "$work/time.txt" "$host" run \
    --experiment-list "$work/experiments.yaml" --virb-configs "$work/virb.yaml" \
    --data-root "$work/data" --out "$work/out" --cache-dir "$work/cache" --device cpu \
    --threads "$THREADS" --decode-workers "$WORKERS" --memory-budget "$MEMORY_BUDGET" \
    --cache-budget 64G $extra > "$work/run.log" 2>&1 || { tail -20 "$work/run.log" >&2; exit 1; }
  read -r wall rss_kb < "$work/time.txt"
  train_s=$("$VIRB_PYTHON_BIN" -c "import json,glob,sys; r=json.load(open(glob.glob(sys.argv[1] + '/out/embeddings/*/results.json')[0])); print(r['timings_s']['train'], r['test_metrics']['top1_accuracy'])" "$work")
  grep -E "memory-mapped|from the feature cache|encode train" "$work/run.log" | head -3 >&2 || true
  echo "virb run ${extra:-(encode)}: wall ${wall}s, peak RSS $((rss_kb / 1024)) MiB, train+top-1: $train_s" >&2
  runs+=("$wall $rss_kb $train_s")
done
cache_bytes=$(du -sb "$work/cache" | cut -f1)
torch=$("$VIRB_PYTHON_BIN" scripts/py/bench_memory_pytorch.py "$TRAIN" "$DIM" "$CLASSES" "$BATCH" "$EPOCHS" "$THREADS")
echo "pytorch: $torch" >&2
"$VIRB_PYTHON_BIN" - "$EPOCHS" "$cache_bytes" "$torch" "${BENCH_TSV:-}" "$TRAIN" "$DIM" "${runs[@]}" <<'PY'
import json, sys
epochs, cache_bytes, torch, tsv, n, dim = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
runs = [r.split() for r in sys.argv[7:]]
gib = 2**30
print(f"linear head on {n} x {dim} float16 embeddings (cache {cache_bytes / 1e9:.2f} GB), {epochs} epoch(s)")
for label, (wall, rss_kb, train, acc) in zip(("encode + train", "verify cache + train from the map"), runs):
    print(f"  virb {label}: wall {float(wall):.0f} s, peak RSS {int(rss_kb) * 1024 / gib:.2f} GiB, {float(train) / epochs:.1f} s per epoch, top-1 {float(acc):.3f}")
print(f"  pytorch from an in-memory tensor: {torch['seconds_per_epoch']:.1f} s per epoch, peak RSS {torch['peak_rss_bytes'] / gib:.2f} GiB")
if tsv:
    wall, rss_kb, train, acc = runs[1]
    with open(tsv, "a") as f:
        f.write("\t".join(map(str, (f"linear head from a {cache_bytes / 1e9:.1f} GB mapped cache: peak RSS", f"{int(rss_kb) * 1024 / gib:.2f} GiB", f"{torch['peak_rss_bytes'] / gib:.2f} GiB (in memory)", "", "< 2 GB", 1))) + "\n")
        f.write("\t".join(map(str, (f"  seconds per epoch ({n} samples)", f"{float(train) / epochs:.1f} s", f"{torch['seconds_per_epoch']:.1f} s", f"{torch['seconds_per_epoch'] / (float(train) / epochs):.2f}x", "", 1))) + "\n")
PY
