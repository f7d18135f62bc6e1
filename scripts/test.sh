#!/usr/bin/env bash
# Sets up everything the test suite needs on Debian 12 and runs all of it:
# formatting, clippy, the routing-model pipeline's tests, the deployment files' checks
# (Dockerfile, compose, Helm), an offline build from vendored crates, the Rust unit and
# integration tests, and the end-to-end tests that drive the real binaries with the
# official OpenAI and Anthropic Python SDKs (the air-gapped bundle's install included).
#
# Idempotent: a second run reuses the installed packages, the Python venv and the cargo
# target directory (kept outside the clone in $ROUTEIQ_CACHE, default ~/.cache/routeiq).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_build_deps
# A test run gains nothing from incremental compilation, and each clone's path keeps a
# cache of its own in the shared target directory: off, and old ones removed.
export CARGO_INCREMENTAL=0
find "$CARGO_TARGET_DIR/debug/incremental" -mindepth 1 -maxdepth 1 -mtime +1 -exec rm -rf {} + 2>/dev/null || true
# With less than 30 GiB free they all go (a build for tests never reads them): a full disk
# fails the end-to-end tests in ways that look like anything but a full disk.
mkdir -p "$CARGO_TARGET_DIR"
if [ "$(df -Pk "$CARGO_TARGET_DIR" | awk 'NR == 2 { print $4 }')" -lt $((30 * 1024 * 1024)) ]; then
  rm -rf "$CARGO_TARGET_DIR/debug/incremental"
fi
ensure_python_venv tests/e2e/requirements.txt
ensure_python_venv models/training/requirements.txt
ensure_python_venv models/training/requirements-encoder.txt --no-deps
ensure_python_venv tests/deploy/requirements.txt
ensure_nextest
ensure_helm
ensure_s3s_fs
# ONNX Runtime for the data plane: the onnxruntime wheel's library (ort load-dynamic).
ORT_DYLIB_PATH="$(ort_dylib)"
export ORT_DYLIB_PATH ROUTEIQ_S3S_FS="$S3S_FS"

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "cargo build (binaries for the end-to-end tests)"
cargo build --workspace --bins --locked
step "routing-model pipeline: its tests, then artifacts trained on the fixture data"
(cd models/training && "$VENV/bin/python" -m pytest tests -q -p no:cacheprovider)
export ROUTEIQ_TEST_ARTIFACTS="$ROUTEIQ_CACHE/test-artifacts"
rm -rf "$ROUTEIQ_TEST_ARTIFACTS" && mkdir -p "$ROUTEIQ_TEST_ARTIFACTS"
scripts/train-fixture-artifacts.sh "$ROUTEIQ_TEST_ARTIFACTS"
step "arm64: the binaries cross-compiled as deploy/Dockerfile's build stage does (run under qemu-user by tests/deploy/test_cross.py)"
apt_install qemu-user
cross=0
deploy/cross-build.sh arm64 || cross=$?
case "$cross" in
  0) export ROUTEIQ_CROSS_DIR="$ROUTEIQ_CACHE/target-cross/aarch64-unknown-linux-gnu/debug" ;;
  3) echo "note: rustup could not provide aarch64's standard library: tests/deploy/test_cross.py is skipped" >&2 ;;
  *) exit "$cross" ;;
esac
step "deployment files: Dockerfile lint, image root filesystems, arm64 binaries, compose files, Helm chart"
apt_install tini strace iproute2
ROUTEIQ_BIN_DIR="$CARGO_TARGET_DIR/debug" ROUTEIQ_HELM="$HELM" \
  "$VENV/bin/python" -m pytest tests/deploy -q -p no:cacheprovider
step "air-gapped build: the binaries from vendored crates with the network off (tests/e2e/test_airgap.py bundles them)"
# Kept in the cache, at one path for every clone, so the offline build reuses its work.
export ROUTEIQ_VENDOR_DIR="$ROUTEIQ_CACHE/vendor"
deploy/airgap/vendor.sh "$ROUTEIQ_VENDOR_DIR"
deploy/airgap/offline-build.sh
step "PostgreSQL (throwaway cluster for the control-plane tests)"
use_throwaway_postgres
step "cargo nextest (unit and integration tests)"
cargo nextest run --workspace --locked --no-fail-fast
step "redis-server (the end-to-end tests start their own)"
apt_install redis-server
step "pytest (end-to-end, official SDKs)"
ROUTEIQ_BIN_DIR="$CARGO_TARGET_DIR/debug" "$VENV/bin/python" -m pytest tests/e2e -q -p no:cacheprovider
