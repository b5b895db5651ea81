#!/usr/bin/env bash
# Decode + antialiased resize + normalise throughput, per core: virb's image preprocessing
# (plugins/kit/src/image.rs through the decode_bench example) against PIL + torchvision transforms,
# both on one thread, side by side in one run. Invocations alternate (virb, PIL, virb, ...)
# REPEATS times; each invocation times PASSES passes over the set after a warm-up pass and reports
# its median; the table shows the median over invocations.
#
# Both sides run pinned to one CPU (taskset, BENCH_CPU, default the last one) so that "per core"
# holds even where a library starts helper threads.
#
# Usage: scripts/bench-decode.sh   (env: REPEATS=5 PASSES=3 SIZE=224 COUNT=60 BENCH_CPU=N
#        BENCH_TSV=file: append the results as rows for scripts/bench.sh)
# Data: generated once into bench-work/decode/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
REPEATS="${REPEATS:-5}"
PASSES="${PASSES:-3}"
SIZE="${SIZE:-224}"
COUNT="${COUNT:-60}"
WORK=bench-work/decode
PIN=()
if command -v taskset >/dev/null; then
    PIN=(taskset -c "${BENCH_CPU:-$(($(nproc) - 1))}")
fi

cargo build --release -q -p virb-plugin-kit --example decode_bench
BIN=target/release/examples/decode_bench
# Examples carry no rpath to libtorch.
export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# Natural-image-like content: smooth random low-frequency fields, shapes, fine noise.
"$VIRB_PYTHON_BIN" - "$WORK" "$COUNT" <<'PY'
import os, sys, zlib
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

work, count = sys.argv[1], int(sys.argv[2])
sets = [("jpeg-500x375", 500, 375, "JPEG"), ("jpeg-1600x1200", 1600, 1200, "JPEG"), ("png-640x480", 640, 480, "PNG")]
for name, w, h, fmt in sets:
    d = os.path.join(work, name)
    ext = ".jpg" if fmt == "JPEG" else ".png"
    if os.path.isdir(d) and len([f for f in os.listdir(d) if f.endswith(ext)]) == count:
        continue
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    for i in range(count):
        # Low-frequency field: bicubic upsampling of a small random grid, per channel.
        small = rng.uniform(0, 255, (4 + i % 5, 5 + i % 4, 3)).astype(np.uint8)
        base = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), dtype=np.float32)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base += 40 * np.sin(xx / w * (3 + i % 7))[..., None] * np.cos(yy / h * (2 + i % 5))[..., None]
        img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(12):
            x0, y0 = rng.integers(0, w), rng.integers(0, h)
            x1, y1 = x0 + rng.integers(w // 20, w // 3), y0 + rng.integers(h // 20, h // 3)
            col = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=col)
        img = img.filter(ImageFilter.GaussianBlur(1.0))
        arr = np.asarray(img, dtype=np.float32) + rng.normal(0, 6, (h, w, 3))
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        path = os.path.join(d, f"{i:03d}{ext}")
        if fmt == "JPEG":
            img.save(path, quality=90)
        else:
            img.save(path)
PY

SETS=(jpeg-500x375 jpeg-1600x1200 png-640x480)
RES="$WORK/results.txt"
: >"$RES"
for set in "${SETS[@]}"; do
    dir="$WORK/$set"
    # Numerical agreement on every image of the set.
    "$BIN" "$dir" "$SIZE" 0 "$WORK/$set.virb.f32" >/dev/null
    "$VIRB_PYTHON_BIN" scripts/py/decode_bench.py "$dir" "$SIZE" 0 "$WORK/$set.pil.f32" >/dev/null
    for r in $(seq "$REPEATS"); do
        echo "$set virb $("${PIN[@]}" "$BIN" "$dir" "$SIZE" "$PASSES")" >>"$RES"
        echo "$set pil $("${PIN[@]}" "$VIRB_PYTHON_BIN" scripts/py/decode_bench.py "$dir" "$SIZE" "$PASSES")" >>"$RES"
    done
done

"$VIRB_PYTHON_BIN" - "$RES" "$WORK" "$SIZE" "${BENCH_TSV:-}" "${SETS[@]}" <<'PY'
import json, sys, statistics
import numpy as np
res, work, size, tsv, sets = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5:]
rows = []
rates = {}
for line in open(res):
    s, side, js = line.split(" ", 2)
    rates.setdefault((s, side), []).append(json.loads(js)["images_per_s"])
level = 1 / 255 / 0.225
print(f"target {size}x{size}, one thread each, pinned to one CPU, median img/s over {len(next(iter(rates.values())))} alternating runs")
print(f"{'set':<16} {'virb img/s':>11} {'PIL img/s':>10} {'ratio':>6}   {'max|diff|':>9} {'mean|diff|':>10} (one 8-bit level = {level:.4f})")
for s in sets:
    v, p = statistics.median(rates[(s, "virb")]), statistics.median(rates[(s, "pil")])
    a = np.fromfile(f"{work}/{s}.virb.f32", dtype="<f4")
    b = np.fromfile(f"{work}/{s}.pil.f32", dtype="<f4")
    d = np.abs(a - b)
    print(f"{s:<16} {v:>11.1f} {p:>10.1f} {v / p:>5.2f}x   {d.max():>9.4f} {d.mean():>10.5f}")
    n = len(rates[(s, "virb")])
    rows.append((f"decode+resize+normalise {s} to {size} px, 1 core (max diff {d.max() / level:.0f} levels)", f"{v:.0f} img/s", f"{p:.0f} img/s", f"{v / p:.2f}x", ">= 2x", n))
if tsv:
    with open(tsv, "a") as f:
        for r in rows:
            f.write("\t".join(str(x) for x in r) + "\n")
PY
