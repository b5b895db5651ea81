# Source this file (`. scripts/env.sh`) to point cargo at the cached libtorch.
# It runs scripts/setup-libtorch.sh, which installs the venv the first time and is instant after,
# and scripts/setup-build-tools.sh (cmake and nasm for libjpeg-turbo; the same).
_virb_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
bash "$_virb_root/scripts/setup-build-tools.sh" || return 1 2>/dev/null || exit 1
VIRB_VENV="$(bash "$_virb_root/scripts/setup-libtorch.sh")" || return 1 2>/dev/null || exit 1
export VIRB_VENV
VIRB_PYTHON_BIN="$VIRB_VENV/bin/python"
export VIRB_PYTHON_BIN
LIBTORCH="$("$VIRB_PYTHON_BIN" -c 'import torch, os; print(os.path.dirname(torch.__file__))')"
export LIBTORCH
unset LIBTORCH_USE_PYTORCH LIBTORCH_INCLUDE LIBTORCH_LIB
