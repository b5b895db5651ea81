#!/usr/bin/env bash
# The one benchmark of virb's speed: each step side by side with plain PyTorch on the same machine
# in one run (medians of alternating runs), then one table: step, virb, PyTorch, ratio, goal.
#
#   1. decode + antialiased resize + normalise, per core (scripts/bench-decode.sh): virb's image
#      pipeline vs. PIL + torchvision transforms, JPEG and PNG;
#   2. encode and end to end (scripts/bench-e2e.sh): ResNet-50 at 224 px on a generated
#      CalTech-101 set, fp32 and bf16, vs. scripts/py/bench_pytorch.py; with BIG=1 also a
#      2,000-image set (fp32);
#   2b. the probe's accuracy over seeds (the same script, SEEDS=5, step `seeds`): virb's `repeats`
#      against the plain script's probe trained with as many seeds, mean +- standard deviation;
#   3. the experiment machinery (scripts/bench-experiments.sh): a grid of 8 configs vs. 1 on a warm
#      feature cache, and the demo's first run vs. its identical rerun;
#   4. with MEMORY=1, a linear head from an ImageNet-sized memory-mapped embedding cache vs. PyTorch
#      from an in-memory tensor (scripts/bench-memory.sh).
#
#   REPEATS (3; each sub-benchmark's runs per side) PRECISIONS ("fp32 bf16") BIG (0) MEMORY (0)
#   STEPS ("decode e2e seeds experiments"; "big" with BIG=1) SEEDS (5, the seeds step's) APPEND (0; 1 keeps the rows of earlier
#   steps in bench-work/bench-table.tsv, to redo one step and reprint the table)
#   E2E_REPEATS (REPEATS) BF16_REPEATS (1) BIG_REPEATS (1) THREADS (2) WORKERS (2)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
REPEATS=${REPEATS:-3} PRECISIONS=${PRECISIONS:-fp32 bf16} BIG=${BIG:-0}
E2E_REPEATS=${E2E_REPEATS:-$REPEATS} BIG_REPEATS=${BIG_REPEATS:-1} BF16_REPEATS=${BF16_REPEATS:-1}
export THREADS=${THREADS:-2} WORKERS=${WORKERS:-2}
STEPS=${STEPS:-decode e2e seeds experiments}
[ "$BIG" = 1 ] && STEPS="$STEPS big"
# ~6 minutes and 6 GB of disk (a 5.5 GB embedding cache): only when asked.
[ "${MEMORY:-0}" = 1 ] && STEPS="$STEPS memory"
# The rows so far, kept (git-ignored) so that APPEND=1 STEPS=... can redo one step and reprint.
mkdir -p bench-work
tsv="$root/bench-work/bench-table.tsv"
[ "${APPEND:-0}" = 1 ] || : > "$tsv"
export BENCH_TSV="$tsv"
for step in $STEPS; do
  case "$step" in
    decode) REPEATS=$REPEATS bash scripts/bench-decode.sh ;;
    e2e) REPEATS=$E2E_REPEATS BF16_REPEATS=$BF16_REPEATS PRECISIONS="$PRECISIONS" bash scripts/bench-e2e.sh ;;
    # The accuracy over seeds, on a set where the probe does not saturate: few images per class
    # and a small learning rate (top-1 ~0.95, a standard deviation of ~0.03 between seeds).
    seeds) REPEATS=1 BF16_REPEATS=1 PRECISIONS="$PRECISIONS" CLASSES=12 TRAIN_PER_CLASS=10 TEST_PER_CLASS=20 \
      SEEDS=${SEEDS:-5} LR=3e-5 bash scripts/bench-e2e.sh ;;
    big) REPEATS=$BIG_REPEATS BF16_REPEATS=$BIG_REPEATS PRECISIONS="$PRECISIONS" CLASSES=10 TRAIN_PER_CLASS=150 TEST_PER_CLASS=50 bash scripts/bench-e2e.sh ;;
    experiments) REPEATS=$REPEATS bash scripts/bench-experiments.sh ;;
    memory) bash scripts/bench-memory.sh ;;
    *) echo "unknown step $step (decode, e2e, seeds, big, experiments, memory)" >&2; exit 2 ;;
  esac
done
. scripts/env.sh
"$VIRB_PYTHON_BIN" - "$tsv" <<'PY'
import os, platform, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
flags = next((l.split(":", 1)[1].split() for l in open("/proc/cpuinfo") if l.startswith("flags")), [])
bf16 = [f for f in ("avx512_bf16", "amx_bf16") if f in flags] or ["no bf16 instructions"]
print()
print(f"machine: {cpu}, {os.cpu_count()} cores ({', '.join(bf16)}); threads {os.environ['THREADS']}, decode workers {os.environ['WORKERS']}")
head = ("step", "virb", "PyTorch", "ratio", "goal", "runs")
width = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, width)) + " |"
print(line(head))
print("|" + "|".join("-" * (w + 2) for w in width) + "|")
for r in rows:
    print(line(r))
print("ratio: virb/PyTorch throughput, PyTorch/virb wall time, or as the step says; >1 = virb faster")
PY
