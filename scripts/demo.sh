#!/usr/bin/env bash
# The README's first command: sets up libtorch (cached venv outside the repository), builds
# virb-host and its plugins (release), writes a small synthetic data set in the CalTech-101 layout
# and a ResNet-50 weights file in torchvision's format, runs the demo configs and prints the
# results table. Everything it writes goes to demo/ (and the venv cache).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
. scripts/env.sh
scripts/build.sh release
host=target/release/virb-host
mkdir -p demo
if [ ! -f demo/data/caltech-101/caltech101_test.json ]; then
  "$host" fixtures CalTech-101 demo/data --force --classes 5 --train-per-class 12 --test-per-class 8 --image-size 96
fi
if [ ! -f demo/resnet50.pt ]; then
  echo "writing demo/resnet50.pt (torchvision ResNet-50 format, random weights calibrated on the demo images)" >&2
  "$VIRB_PYTHON_BIN" scripts/py/make_weights.py demo/resnet50.pt.tmp --calibrate-dir demo/data --calibrate-size 112
  mv demo/resnet50.pt.tmp demo/resnet50.pt
fi
exec "$host" run \
  --experiment-list configs/experiment_lists/demo.yaml \
  --virb-configs configs/virb_configs/demo.yaml \
  --data-root demo/data --out demo/out "$@"
