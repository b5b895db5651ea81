#!/usr/bin/env bash
# Runs every test: checks formatting, sets up libtorch (cached venv, first time only), builds the
# workspace (virb-host, the project's plugins, the test fixture plugins), runs clippy with warnings
# as errors, then runs the workspace's tests (unit tests and the integration tests, which drive
# the real binary and plugins).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
. scripts/env.sh
if [ "${CI:-}" = true ]; then
  # A clean clone builds once: incremental compilation would only add ~4 GB of target/ (a CI run
  # once failed when the machine's disk filled: the linker died of SIGBUS, a torch.save failed).
  export CARGO_INCREMENTAL=0
fi
# The disk the run starts with, so that a failure from a full disk reads as one. The build, the
# test data and the libtorch venv take about 20 GB on a clean machine.
df -h "$root" "${TMPDIR:-/tmp}" 2>/dev/null | sed 's/^/disk: /' >&2 || true
avail_kb=$(df -Pk "$root" 2>/dev/null | awk 'NR==2 {print $4}')
if [ -n "$avail_kb" ] && [ "$avail_kb" -lt $((12 * 1024 * 1024)) ]; then
  echo "warning: only $((avail_kb / 1024)) MiB free on the disk of $root; the build and tests need about 12 GB more" >&2
fi
cargo fmt --all --check
# --all-targets: the test binaries too, with dev-dependencies, so that `cargo test` reuses every
# unit. Built without them, the build dependencies of torch-sys resolve differently and `cargo
# test` recompiled torch-sys's C++ (measured: 4.5 min of a cold run; 7 s with this).
scripts/build.sh debug --all-targets
# virb-host-next is the host's own source built against a later plugin-api patch: checking it
# again would only repeat virb-host's check.
cargo clippy --workspace --all-targets --exclude virb-host-next -- -D warnings
# A real single-node Slurm on localhost for it/slurm.rs (installs slurm-wlm and munge the first
# time, as root; about 15 s, then 1 s). Stopped when the tests end, unless it was already up.
slurm_dir="${VIRB_SLURM_DIR:-/tmp/virb-slurm}"
slurm_was_up=false
if scripts/slurm-local.sh status >/dev/null 2>&1; then slurm_was_up=true; fi
if scripts/slurm-local.sh up >"${TMPDIR:-/tmp}/virb-slurm-up.log" 2>&1; then
  . "$slurm_dir/env.sh"
  export VIRB_REQUIRE_SLURM=1
  if [ "$slurm_was_up" = false ]; then trap 'scripts/slurm-local.sh down >/dev/null 2>&1 || true' EXIT; fi
elif [ "${CI:-}" = true ]; then
  cat "${TMPDIR:-/tmp}/virb-slurm-up.log" >&2
  echo "error: CI needs the local Slurm (scripts/slurm-local.sh up failed, above)" >&2
  exit 1
else
  tail -5 "${TMPDIR:-/tmp}/virb-slurm-up.log" >&2
  echo "warning: no local Slurm (scripts/slurm-local.sh up failed, above): the Slurm tests are skipped" >&2
fi
export VIRB_TEST_PROFILE=debug
# Tests run several virb-host processes at once on few cores: libtorch's OpenMP threads that spin
# after each op steal the cores the other processes need (measured: depth:: tests 93 s -> 34 s,
# medians of 2, with PASSIVE). A caller's own setting wins.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
cargo test --workspace "$@"
