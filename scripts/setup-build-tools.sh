#!/usr/bin/env bash
# Makes sure the tools the build needs beyond Rust and a C compiler are here: cmake and nasm, which
# build libjpeg-turbo (PIL's JPEG decoder, with its SIMD code) from the source bundled with the
# turbojpeg-sys crate, linked statically into the plugins that decode images. Installs them from
# Debian's packages the first time when run as root with apt-get; otherwise says what to install.
# Instant when both are present. Sourced through scripts/env.sh.
set -euo pipefail
missing=()
for tool in cmake nasm; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} (apt-get; builds libjpeg-turbo, first time only)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  exit 0
fi
echo "error: the build needs ${missing[*]} (to build libjpeg-turbo from source): install them with" >&2
echo "  your package manager (Debian/Ubuntu: sudo apt-get install ${missing[*]}), or run this as root" >&2
exit 1
