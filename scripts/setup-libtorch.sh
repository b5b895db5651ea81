#!/usr/bin/env bash
# Installs libtorch 2.11.0 (from the PyPI wheel `torch==2.11.0`) and the Python packages the tests
# use as a reference (torchvision, Pillow, safetensors, tensorboard) into a venv cached outside the
# repository. Re-running reuses the venv. Prints the venv path on stdout, logs on stderr.
#
# The stamp's version is bumped whenever the package list grows: a venv stamped with an older
# version is completed in place (pip skips the packages already installed, so only the new ones
# are downloaded).
#
#   VIRB_CACHE_DIR  where the venv lives (default: ${XDG_CACHE_HOME:-$HOME/.cache}/virb)
#   VIRB_PYTHON     the python used to create the venv (default: python3)
set -euo pipefail

TORCH_VERSION=2.11.0
TORCHVISION_VERSION=0.26.0
# Pinned: the tests check that virb decodes JPEGs to exactly the pixels PIL does (both run
# libjpeg-turbo; this Pillow bundles 3.2, virb builds 3.1, whose decoders agree).
PILLOW_VERSION=13.0.0
cache="${VIRB_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/virb}"
venv="$cache/torch-$TORCH_VERSION-venv"
stamp="$venv/.virb-complete-v3"
python="${VIRB_PYTHON:-python3}"

if [ -f "$stamp" ]; then
  echo "$venv"
  exit 0
fi

mkdir -p "$cache"
echo "setting up libtorch $TORCH_VERSION in $venv (first time only; downloads a few GB from PyPI)" >&2
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv" >&2
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
"$venv/bin/python" -m pip install --disable-pip-version-check --progress-bar off \
  "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" \
  "pillow==$PILLOW_VERSION" numpy safetensors tensorboard >&2
# Verify the install is usable before marking it complete.
"$venv/bin/python" - >&2 <<'PY'
import torch, torchvision, os
from tensorboard.backend.event_processing import event_accumulator  # noqa: F401
lib = os.path.join(os.path.dirname(torch.__file__), "lib")
assert os.path.exists(os.path.join(lib, "libtorch_cpu.so")), lib
print("torch", torch.__version__, "torchvision", torchvision.__version__, "lib", lib)
PY
touch "$stamp"
echo "$venv"
