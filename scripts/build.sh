#!/usr/bin/env bash
# Builds virb-host and the project's plugins, and puts the plugins where virb-host looks by
# default (<folder of virb-host>/plugins). Usage: scripts/build.sh [release|debug] [cargo build args]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
. scripts/env.sh
profile="${1:-release}"
shift || true
flag=()
[ "$profile" = release ] && flag=(--release)
# The project's own plugins: every cdylib under plugins/.
plugins=(virb-encoder-resnet virb-encoder-torchscript virb-task-classification virb-task-counting virb-task-egomotion virb-task-action virb-task-segmentation virb-task-depth virb-task-flow)
# The whole workspace in one invocation (the test fixture plugins are small): building subsets
# separately unifies dependency features differently and rebuilds torch-sys's C++ each time.
cargo build "${flag[@]}" --workspace "$@"
target="${CARGO_TARGET_DIR:-$root/target}/$profile"
mkdir -p "$target/plugins"
for p in "${plugins[@]}"; do
  lib="lib${p//-/_}.so"
  # Copy then rename, so a running virb-host never sees a half-written plugin.
  cp "$target/$lib" "$target/plugins/.$lib.tmp"
  mv "$target/plugins/.$lib.tmp" "$target/plugins/$lib"
done
echo "built $target/virb-host (the launcher), $target/virb-host-core and the plugins in $target/plugins" >&2
