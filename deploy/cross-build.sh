#!/usr/bin/env bash
# Cross-compiles the RouteIQ binaries for another architecture the way deploy/Dockerfile's
# build stage does (the builder's own platform, Debian's cross toolchain, the target's Rust
# standard library from rustup; no emulation), on this host, without a container engine.
#
#   deploy/cross-build.sh arm64 [--release]     # default: the dev profile
#
# Output: $ROUTEIQ_CACHE/target-cross/<triple>/{debug,release}/ (its own target directory).
# Installs the cross toolchain (apt) and the target's standard library (rustup) when
# missing (exit 3 when rustup cannot provide the standard library). tests/deploy/test_cross.py
# starts the binaries it builds under qemu-user.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

arch="${1:?usage: deploy/cross-build.sh amd64|arm64 [--release]}"
profile=()
[ "${2:-}" = "--release" ] && profile=(--release)
case "$arch" in
  amd64) triple=x86_64-unknown-linux-gnu; gnu=x86_64-linux-gnu ;;
  arm64) triple=aarch64-unknown-linux-gnu; gnu=aarch64-linux-gnu ;;
  *) echo "unsupported architecture: $arch (amd64 or arm64)" >&2; exit 2 ;;
esac

ensure_build_deps
apt_install "gcc-${gnu//_/-}" "g++-${gnu//_/-}" "libc6-dev-${arch}-cross"
if ! rustup target list --installed | grep -qx "$triple"; then
  step "rustup target add $triple"
  # Exit 3 tells the caller the target's standard library could not be had (rustup's
  # server unreachable), as opposed to a build that failed.
  rustup target add "$triple" || exit 3
fi

# The same variables as the Dockerfile: cargo's linker and the cc crate's compilers.
upper="${triple^^}"
lower="${triple//-/_}"
export "CARGO_TARGET_${upper//-/_}_LINKER=${gnu}-gcc" "CC_${lower}=${gnu}-gcc" \
  "CXX_${lower}=${gnu}-g++" "AR_${lower}=${gnu}-ar"
step "cargo build --target $triple ${profile[*]}"
# No incremental data: this target dir is rebuilt as a whole, and it would keep gigabytes.
CARGO_INCREMENTAL=0 CARGO_TARGET_DIR="$ROUTEIQ_CACHE/target-cross" cargo build --locked --target "$triple" \
  "${profile[@]}" \
  -p routeiq-dataplane -p routeiq-controlplane -p routeiq-admin -p routeiq-service --bins >&2
