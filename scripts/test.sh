#!/usr/bin/env bash
# Runs every test: checks formatting, sets up libtorch (cached venv, first time only), builds the
# workspace (virb-host, the project's plugins, the test fixture plugins), runs clippy with warnings
# as errors, then runs the workspace's tests (unit tests and the integration tests, which drive
# the real binary and plugins).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
. scripts/env.sh
cargo fmt --all --check
# --all-targets: the test binaries too, with dev-dependencies, so that `cargo test` reuses every
# unit. Built without them, the build dependencies of torch-sys resolve differently and `cargo
# test` recompiled torch-sys's C++ (measured: 4.5 min of a cold run; 7 s with this).
scripts/build.sh debug --all-targets
cargo clippy --workspace --all-targets -- -D warnings
export VIRB_TEST_PROFILE=debug
cargo test --workspace "$@"
