#!/usr/bin/env bash
# Copies every crate the workspace's Cargo.lock names into `vendor/` (gitignored), or the
# directory given, for builds with no network: the image build (deploy/Dockerfile, which
# wants `vendor/`) and offline-build.sh. Needs the crate registry (or a warm
# ~/.cargo/registry cache) once.
#
#   deploy/airgap/vendor.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
dir="${1:-vendor}"
step "cargo vendor --locked into $dir"
cargo vendor --locked --versioned-dirs "$dir" >/dev/null
