#!/usr/bin/env bash
# Builds the RouteIQ binaries from the vendored crates (`vendor/`, made by vendor.sh) with
# no network: `cargo build --offline --locked` against a source replacement, run under
# `unshare -n` (a network namespace with loopback only) when that is possible, so a build
# that tried to fetch anything would fail rather than quietly succeed.
#
#   deploy/airgap/offline-build.sh [--release]     # default: the dev profile
#
# The vendored crates are read from $ROUTEIQ_VENDOR_DIR (default: vendor/, made first when
# missing).
#
# Output: $ROUTEIQ_CACHE/target-offline/{debug,release}/ (its own target directory: builds
# from vendored and registry sources do not share compiled artifacts).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
profile=()
[ "${1:-}" = "--release" ] && profile=(--release)

VENDOR="${ROUTEIQ_VENDOR_DIR:-$PWD/vendor}"
[ -d "$VENDOR" ] || deploy/airgap/vendor.sh "$VENDOR"
isolate=()
if [ "$(id -u)" -eq 0 ] && unshare -n true 2>/dev/null; then
  isolate=(unshare -n)
else
  echo "note: not root or no unshare: building offline but not in an empty network namespace" >&2
fi
step "cargo build --offline --locked from $VENDOR ${isolate[*]:+(network namespace: loopback only)}"
# No incremental data: this target dir is rebuilt as a whole, and it would keep gigabytes.
CARGO_INCREMENTAL=0 CARGO_TARGET_DIR="$ROUTEIQ_CACHE/target-offline" "${isolate[@]}" cargo build --offline --locked \
  "${profile[@]}" \
  --config 'source.crates-io.replace-with="vendored-sources"' \
  --config "source.vendored-sources.directory=\"$VENDOR\"" \
  -p routeiq-dataplane -p routeiq-controlplane -p routeiq-admin -p routeiq-service --bins >&2
