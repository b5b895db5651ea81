#!/usr/bin/env bash
# Runs every test: sets up libtorch (cached venv, first time only), builds the workspace (virb-host,
# the project's plugins, the test fixture plugins), then runs the workspace's tests (unit tests and
# the integration tests, which drive the real binary and plugins).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
. scripts/env.sh
scripts/build.sh debug
export VIRB_TEST_PROFILE=debug
cargo test --workspace "$@"
