#!/usr/bin/env bash
# Build the enclave-os binary so that one commit gives the same bytes wherever it is checked out:
# the `measured` profile (release, with one codegen unit and fat LTO), the locked dependencies, and every build path
# remapped, so that panic locations and debug strings name /build/..., /cargo/... and /target/...
# instead of this machine's directories. Prints the binary's SHA-256. See docs/measurement.md.
#
#   scripts/reproducible-build.sh [extra cargo build arguments, e.g. --offline]
#
# Environment: CARGO_TARGET_DIR (default <checkout>/target/reproducible), CARGO_HOME (default
# ~/.cargo), SOURCE_DATE_EPOCH (default: the commit's time; required outside a git checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd -P)
cargo_home=${CARGO_HOME:-$HOME/.cargo}
cargo_home=$(cd "$cargo_home" && pwd -P)
target=${CARGO_TARGET_DIR:-$root/target/reproducible}
mkdir -p "$target"
target=$(cd "$target" && pwd -P)

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  if ! SOURCE_DATE_EPOCH=$(git -C "$root" log -1 --format=%ct 2>/dev/null); then
    echo "reproducible-build: not a git checkout: set SOURCE_DATE_EPOCH (the commit's time)" >&2
    exit 2
  fi
fi
export SOURCE_DATE_EPOCH

# Flags from the environment or a user's config would change the code: refuse them rather than
# build something else than what the docs say.
if [ -n "${CARGO_ENCODED_RUSTFLAGS:-}" ] || [ -n "${CARGO_BUILD_RUSTFLAGS:-}" ]; then
  echo "reproducible-build: unset CARGO_ENCODED_RUSTFLAGS / CARGO_BUILD_RUSTFLAGS first" >&2
  exit 2
fi
# rustc applies the last prefix that matches, so the target directory (often inside the
# checkout) comes after the checkout.
export RUSTFLAGS="--remap-path-prefix=$root=/build --remap-path-prefix=$cargo_home=/cargo --remap-path-prefix=$target=/target"
export CARGO_TARGET_DIR=$target
# Incremental state is not used in release builds, but say so: nothing of a previous build's
# session may leak into this one.
export CARGO_INCREMENTAL=0

cargo build --profile measured --locked -p enclave-os "$@"
sha256sum "$target/measured/enclave-os"
