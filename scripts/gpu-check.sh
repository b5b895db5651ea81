#!/usr/bin/env bash
# One prepared check of virb on a GPU machine that has PyTorch 2.11 and no Rust toolchain.
#
# Run it from a copy of the repository root in which target/release/virb-host, virb-host-core and
# target/release/plugins/*.so were built elsewhere (`scripts/build.sh release`) and carried over.
# The binaries' rpath names the build machine's libtorch, so this script points LD_LIBRARY_PATH at
# the local PyTorch's torch/lib (the same libtorch 2.11.0 wheel).
#
# Steps (each prints a `=== [time] N. ... ===` header):
#   1. environment: nvidia-smi -L, torch's version and torch.cuda.device_count()
#   2. `virb-host devices`; the check fails unless it prints `cuda check: ok` (libtorch uses
#      every CUDA device the driver reports) and one `  cuda:N  <name> ...` line per device
#   3. a synthetic CalTech-101 data set (`virb-host fixtures`), a torchvision-format ResNet-50
#      (scripts/py/make_weights.py), then `virb-host run --devices all` (or `--device cuda` on a
#      host without --devices): wall time and the results table, and virb's encode images/s at
#      fp32 and bf16 with decoding in the loop and in the encoder alone (5,000 images per
#      experiment at 224 px, encode batch 256). Skipped when step 2 failed.
#   4. plain PyTorch ResNet-50 encode throughput at 224 px, batch 256, channels_last, 20 warm-up
#      + 50 timed iterations, fp32 (PyTorch's default TF32 convolutions) and bf16 autocast (plus
#      bf16 weights and inputs): the images/s virb's encoder alone is compared against.
#   5. plain PyTorch with decoding in the loop: scripts/py/bench_pytorch.py (PIL in a DataLoader,
#      a worker per core, eager ResNet-50) on step 3's images, fp32 and bf16: what virb's
#      images/s with decoding in the loop is compared against.
# The exit status is 1 when any check failed; step 4 still runs after a failed step 2 so that one
# call of a scarce GPU machine reports as much as it can.
#
# Output: a handful of small files in $OUT when set (the device tool collects it: gpu-check.log,
# devices.txt, results.txt, bench.txt), else in a new temporary folder; the bulky work folder
# (data, results, feature cache) is a separate temporary folder. Under 5 minutes on an H200.
#
# Environment: PYTHON (default python3: the one with torch), VIRB_HOST (default
# target/release/virb-host), GPU_CHECK_ALLOW_CPU=1 (no GPU required: CUDA failures are warnings,
# the run uses the CPU and the benchmark shrinks; to exercise the flow on a CPU machine),
# GPU_CHECK_CLASSES / GPU_CHECK_TRAIN / GPU_CHECK_TEST / GPU_CHECK_SIZE / GPU_CHECK_EPOCHS (the
# fixture and the run's size), BENCH_BATCH / BENCH_WARMUP / BENCH_ITERS / BENCH_SIZE.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

allow_cpu="${GPU_CHECK_ALLOW_CPU:-0}"
python="${PYTHON:-python3}"
host="${VIRB_HOST:-$root/target/release/virb-host}"
if [ -n "${OUT:-}" ]; then
  out="$OUT"
else
  out="$(mktemp -d -t virb-gpu-check.XXXXXX)"
fi
mkdir -p "$out"
work="$(mktemp -d -t virb-gpu-work.XXXXXX)"
exec > >(tee -a "$out/gpu-check.log") 2>&1
tee_pid=$!
# On every exit: remove the work folder, then let tee write the log's last lines.
finish() {
  rm -rf "$work"
  exec >&- 2>&-
  wait "$tee_pid" 2>/dev/null || true
}
trap finish EXIT

failures=()
step() { printf '\n=== [%s] %s ===\n' "$(date +%T)" "$*"; }
# A failed requirement: fatal, unless GPU_CHECK_ALLOW_CPU=1 makes it a warning.
require() {
  if [ "$allow_cpu" = 1 ]; then
    echo "WARNING (GPU_CHECK_ALLOW_CPU=1): $*"
  else
    echo "!!!!!!!! GPU CHECK FAILED: $*"
    failures+=("$*")
  fi
}
now() { date +%s.%N; }
seconds_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
started="$(now)"
echo "gpu-check: repository $root, output $out, work $work"

step "1. environment"
[ -x "$host" ] || { echo "GPU CHECK FAILED: $host missing: build it with scripts/build.sh release and carry target/release/virb-host, target/release/virb-host-core and target/release/plugins"; exit 1; }
ls target/release/plugins/*.so >/dev/null 2>&1 || echo "note: no plugins in target/release/plugins (VIRB_PLUGINS_DIR: ${VIRB_PLUGINS_DIR:-unset})"
torch_dir="$("$python" -c 'import torch, os; print(os.path.dirname(torch.__file__))')"
export LD_LIBRARY_PATH="$torch_dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-<unset>}"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi -L || require "nvidia-smi -L failed"
else
  require "nvidia-smi not found"
fi
"$python" - <<'EOF'
import torch
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()})")
print(f"torch.cuda.is_available() = {torch.cuda.is_available()}")
print(f"torch.cuda.device_count() = {torch.cuda.device_count()}")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"  cuda:{i}  {p.name}  {p.total_memory / 2**30:.1f} GiB  sm_{p.major}{p.minor}, {p.multi_processor_count} SMs")
EOF
torch_cuda="$("$python" -c 'import torch; print(torch.cuda.device_count())')"
[ "$torch_cuda" -gt 0 ] || require "PyTorch sees no CUDA device"

step "2. virb-host devices"
"$host" devices | tee "$out/devices.txt"
virb_ok=1
if ! grep -q '^cuda check: ok' "$out/devices.txt"; then
  virb_ok=0
  require "virb-host devices does not report the CUDA devices as usable by libtorch: $(grep '^cuda check' "$out/devices.txt" || echo 'no cuda check line')"
fi
listed="$(grep -c '^  cuda:[0-9]' "$out/devices.txt" || true)"
if [ "$listed" != "$torch_cuda" ]; then
  virb_ok=0
  require "virb-host devices lists $listed CUDA device(s), PyTorch sees $torch_cuda"
fi
[ "$virb_ok" = 1 ] && echo "virb-host devices: OK ($listed CUDA device(s) usable by libtorch)"

step "3. virb-host run on a synthetic CalTech-101"
if [ "$virb_ok" = 0 ] && [ "$allow_cpu" != 1 ]; then
  echo "skipped: step 2 failed (a run would silently use the CPU)"
else
  # On a GPU: enough images (5,000 per experiment) and a large encode batch for a throughput
  # worth reading; on a CPU (GPU_CHECK_ALLOW_CPU=1) a small run that exercises the flow.
  if [ "$torch_cuda" -gt 0 ]; then big=(400 100 256); else big=(40 20 32); fi
  classes="${GPU_CHECK_CLASSES:-10}" train="${GPU_CHECK_TRAIN:-${big[0]}}" test="${GPU_CHECK_TEST:-${big[1]}}"
  size="${GPU_CHECK_SIZE:-160}" epochs="${GPU_CHECK_EPOCHS:-20}" encode_batch="${GPU_CHECK_ENCODE_BATCH:-${big[2]}}"
  t="$(now)"
  "$host" fixtures CalTech-101 "$work/data" --force --classes "$classes" \
    --train-per-class "$train" --test-per-class "$test" --image-size "$size"
  echo "fixtures: $((classes * (train + test))) images in $(seconds_since "$t") s"
  t="$(now)"
  "$python" scripts/py/make_weights.py "$work/resnet50.pt" --calibrate-dir "$work/data" --calibrate-size 112
  echo "weights: $work/resnet50.pt in $(seconds_since "$t") s"
  cat >"$work/experiments.yaml" <<EOF
gpu-check-resnet50: {weights: '$work/resnet50.pt', encoder: resnet50, options: {precision: fp32}}
gpu-check-resnet50-bf16: {weights: '$work/resnet50.pt', encoder: resnet50, options: {precision: bf16}}
EOF
  cat >"$work/virb.yaml" <<EOF
CalTech-101:
  task: "CalTech-101"
  training_configs:
    adam-0.001:
      optimizer: "adam"
      lr: 0.001
    sgd-0.01-OneCycle:
      optimizer: "sgd"
      lr: 0.01
      scheduler:
        type: "OneCycle"
  num_epochs: $epochs
  batch_size: 32
  test_batch_size: $encode_batch
  image_size: 224
EOF
  if "$host" run --help | grep -q -- '--devices'; then
    devices=(--devices all)
  elif [ "$torch_cuda" -gt 0 ]; then
    devices=(--device cuda)
  else
    devices=(--device cpu)
  fi
  echo "virb-host run ${devices[*]}"
  t="$(now)"
  set +e
  "$host" run --experiment-list "$work/experiments.yaml" --virb-configs "$work/virb.yaml" \
    --data-root "$work/data" --out "$work/out" --cache-dir "$work/cache" "${devices[@]}" \
    | tee "$out/results.txt"
  rc="${PIPESTATUS[0]}"
  set -e
  wall="$(seconds_since "$t")"
  echo "virb-host run: exit $rc, wall time $wall s (${devices[*]}, $classes classes, $((classes * (train + test))) images, $epochs epochs x 2 configs)" | tee -a "$out/results.txt"
  [ "$rc" = 0 ] || require "virb-host run failed (exit $rc)"
  # virb's encode throughput (decoding in the loop, one batch ahead) per experiment, from the
  # results' timings: fp32 and bf16 against PyTorch's below.
  "$python" - "$work/out" <<'EOF' | tee -a "$out/results.txt"
import glob, json, os, sys
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*", "CalTech-101-adam-0.001", "results.json"))):
    r = json.load(open(path))
    t = r["timings_s"]
    n = r["train_size"] + r["test_size"]
    print(f"virb encode {r['experiment']:<26} {n / max(t['encode_wall'], 1e-9):10.1f} images/s with decoding in the loop, "
          f"{n / max(t['encode'], 1e-9):10.1f} images/s in the encoder alone "
          f"(decode {t['decode']:.1f} s summed, encode {t['encode']:.1f} s, wall {t['encode_wall']:.1f} s, {n} images, {r['device']})")
EOF
fi

step "4. plain PyTorch ResNet-50 encode throughput (the reference)"
if [ "$torch_cuda" -gt 0 ]; then
  bench_defaults=(256 20 50 224)
else
  echo "no CUDA: a token CPU run (batch 2, 1 + 2 iterations) to exercise the code"
  bench_defaults=(2 1 2 224)
fi
BENCH_BATCH="${BENCH_BATCH:-${bench_defaults[0]}}" BENCH_WARMUP="${BENCH_WARMUP:-${bench_defaults[1]}}" \
BENCH_ITERS="${BENCH_ITERS:-${bench_defaults[2]}}" BENCH_SIZE="${BENCH_SIZE:-${bench_defaults[3]}}" \
PYTHONUNBUFFERED=1 "$python" - <<'EOF' | tee "$out/bench.txt"
import os, time
import torch, torchvision

batch, warmup, iters, size = (int(os.environ[k]) for k in ("BENCH_BATCH", "BENCH_WARMUP", "BENCH_ITERS", "BENCH_SIZE"))
cuda = torch.cuda.is_available()
device = torch.device("cuda" if cuda else "cpu")
sync = torch.cuda.synchronize if cuda else (lambda: None)
name = torch.cuda.get_device_name(0) if cuda else "cpu"
print(f"ResNet-50 forward (torchvision, eval, inference_mode, channels_last) on {name}: "
      f"batch {batch}, {size} px, {warmup} warm-up + {iters} timed iterations; "
      f"cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, cudnn.benchmark=True")
torch.backends.cudnn.benchmark = True
model = torchvision.models.resnet50().eval().to(device, memory_format=torch.channels_last)
x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)

def run(label, model, x, autocast):
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        for _ in range(warmup):
            model(x)
        sync()
        t = time.perf_counter()
        for _ in range(iters):
            model(x)
        sync()
        dt = time.perf_counter() - t
    print(f"  {label:<28} {batch * iters / dt:10.1f} images/s  ({dt / iters * 1000:.1f} ms per batch)")

run("fp32", model, x, False)
run("bf16 autocast", model, x, True)
run("bf16 weights and inputs", model.to(torch.bfloat16), x.to(torch.bfloat16), False)
if cuda:
    print(f"  peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
EOF

step "5. plain PyTorch with decoding in the loop (scripts/py/bench_pytorch.py on step 3's images)"
if [ -f "$work/data/caltech-101/caltech101_test.json" ]; then
  # The same 224 px images virb encoded in step 3, decoded by PIL in a DataLoader with a worker
  # per core, as a plain script does it; encode images/s counts decoding, transfer and forward.
  if [ "$torch_cuda" -gt 0 ]; then pt_device=cuda; else pt_device=cpu; fi
  workers="$(nproc)"
  for precision in fp32 bf16; do
    "$python" scripts/py/bench_pytorch.py "$work/data" "$work/resnet50.pt" --image-size 224 --epochs 1 \
      --batch-size 32 --encode-batch-size "${encode_batch:-256}" --threads "$workers" --workers "$workers" \
      --precision "$precision" --device "$pt_device" \
      | "$python" -c "import json,sys; r=json.loads(sys.stdin.read()); print(f\"  pytorch encode {sys.argv[1]:<5} {r['encode_images_per_s']:10.1f} images/s with decoding in the loop ({r['images']} images, {sys.argv[2]} DataLoader workers, {sys.argv[3]})\")" "$precision" "$workers" "$pt_device" \
      | tee -a "$out/bench.txt" || require "bench_pytorch.py ($precision) failed"
  done
else
  echo "skipped: step 3 made no data set"
fi

step "done in $(seconds_since "$started") s"
echo "files: $(cd "$out" && ls | tr '\n' ' ')"
if [ "${#failures[@]}" -gt 0 ]; then
  echo "GPU CHECK FAILED (${#failures[@]}):"
  printf '  - %s\n' "${failures[@]}"
  exit 1
fi
echo "GPU CHECK PASSED"
