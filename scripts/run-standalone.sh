#!/usr/bin/env bash
# Builds the data plane and starts it standalone on the example config (or the config given
# as the first argument), listening on 0.0.0.0:4000 (override with ROUTEIQ_LISTEN).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_build_deps
step "cargo build --release -p routeiq-dataplane"
cargo build --release --locked -p routeiq-dataplane
config="${1:-config/example.yaml}"
step "routeiq-dataplane --config $config"
exec "$CARGO_TARGET_DIR/release/routeiq-dataplane" --config "$config"
