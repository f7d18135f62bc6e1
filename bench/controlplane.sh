#!/usr/bin/env bash
# Control-plane benchmarks (issue 3), on real PostgreSQL and nats-server with release builds:
#
#   bench/controlplane.sh [propagation|snapshot|ingest|all] [size]
#
# - propagation: key revocations through gRPC until both of 2 data planes reject the key;
#   p50/p99 over `size` revocations (default 100).
# - snapshot:    `size` keys (default 1000000) in PostgreSQL; the control plane builds and
#   stores the full snapshot, a data plane fetches and applies it; times and data-plane RSS.
# - ingest:      `size` usage events (default 200000) queued in JetStream while the control
#   plane is down, then ingested; events/s and an exact count check.
#
# Figures go to stdout; docs/benchmarks.md records them with the machine they came from.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

what="${1:-all}"
size="${2:-}"
ensure_build_deps
ensure_python_venv tests/e2e/requirements.txt
step "cargo build --release (control plane, data plane)"
cargo build --release --locked -p routeiq-controlplane -p routeiq-dataplane >&2

use_throwaway_postgres
ROUTEIQ_BIN_DIR="$CARGO_TARGET_DIR/release" "$VENV/bin/python" bench/controlplane.py "$what" $size
