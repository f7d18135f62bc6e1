#!/usr/bin/env bash
# Edge-enforcement overhead (issue 5): the same wrk load through an attached data plane
# with the master key (no checks) and with a virtual key that has a budget, RPM, TPM, a
# parallel limit and a model list, first with local limits and then with limits shared
# through Redis. Real PostgreSQL, nats-server, control plane and redis-server; nginx as
# the upstream; release builds.
#
#   bench/enforcement.sh [duration-seconds]     (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_build_deps
ensure_python_venv tests/e2e/requirements.txt
apt_install nginx wrk redis-server
step "cargo build --release (control plane, data plane)"
cargo build --release --locked -p routeiq-controlplane -p routeiq-dataplane >&2

use_throwaway_postgres
ROUTEIQ_BIN_DIR="$CARGO_TARGET_DIR/release" "$VENV/bin/python" bench/enforcement.py "${1:-10}"
