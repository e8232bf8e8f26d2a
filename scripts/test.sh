#!/usr/bin/env bash
# Runs every test of omnisync on a fresh Debian machine: installs the system packages the tests
# need (when missing), then `cargo test`. Used as-is by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the test suite needs, one per line in scripts/apt-packages.txt
# (binaries checked with `command -v`, so an installed machine skips apt entirely).
missing=()
while read -r pkg bin; do
  [[ -z "$pkg" || "$pkg" == \#* ]] && continue
  command -v "${bin:-$pkg}" >/dev/null 2>&1 || missing+=("$pkg")
done < scripts/apt-packages.txt
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup)" >&2; exit 1; }
cargo --version
# The whole suite: unit tests, planner tables and properties, end-to-end CLI scenarios,
# the kill -9 resume test.
cargo test --locked --no-fail-fast "$@"
