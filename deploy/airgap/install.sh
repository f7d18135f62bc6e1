#!/usr/bin/env bash
# Installs an unpacked RouteIQ air-gapped bundle. Needs no network.
#
#   ./install.sh [--prefix /opt/routeiq] [--etc /etc/routeiq] [--state /var/lib/routeiq]
#                [--systemd]   # also put the units in /etc/systemd/system and add the
#                              # `routeiq` system user (root only)
#
# Checks SHA256SUMS first. Binaries, libraries and shared files are replaced on every run;
# files in --etc are written only when absent, so an operator's edits survive upgrades.
# Fresh env files get a random salt key, gRPC token and master key.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
PREFIX=/opt/routeiq ETC=/etc/routeiq STATE=/var/lib/routeiq SYSTEMD=0
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX="$2"; shift 2 ;;
    --etc) ETC="$2"; shift 2 ;;
    --state) STATE="$2"; shift 2 ;;
    --systemd) SYSTEMD=1; shift ;;
    *) echo "usage: $0 [--prefix DIR] [--etc DIR] [--state DIR] [--systemd]" >&2; exit 2 ;;
  esac
done

(cd "$here" && sha256sum --quiet --strict -c SHA256SUMS) || {
  echo "error: the bundle does not match its SHA256SUMS; do not install it" >&2
  exit 1
}
ORT_VERSION="$(cat "$here/ORT_VERSION")"

mkdir -p "$PREFIX" "$ETC" "$STATE/nats"
cp -R "$here/bin" "$here/lib" "$here/share" "$PREFIX/"
cp "$here/VERSION" "$PREFIX/VERSION"

random() { head -c 32 /dev/urandom | base64 | tr -d '/+=' | cut -c1-"$1"; }
# Fills the @NAME@ placeholders of a template.
render() {
  sed -e "s|@PREFIX@|$PREFIX|g" -e "s|@ETC@|$ETC|g" -e "s|@STATE@|$STATE|g" \
      -e "s|@ORT_VERSION@|$ORT_VERSION|g" -e "s|@SALT_KEY@|$SALT_KEY|g" \
      -e "s|@GRPC_TOKEN@|$GRPC_TOKEN|g" -e "s|@MASTER_KEY@|$MASTER_KEY|g" "$1"
}
# The secrets already installed, so a second run writes new files with the same ones.
current() { if [ -f "$ETC/$2" ]; then sed -n "s/^$1=//p" "$ETC/$2" | head -1; fi; }
SALT_KEY="$(current ROUTEIQ_SALT_KEY controlplane.env)"; SALT_KEY="${SALT_KEY:-$(random 43)}"
GRPC_TOKEN="$(current ROUTEIQ_GRPC_TOKEN controlplane.env)"; GRPC_TOKEN="${GRPC_TOKEN:-$(random 32)}"
MASTER_KEY="$(current ROUTEIQ_MASTER_KEY controlplane.env)"; MASTER_KEY="${MASTER_KEY:-sk-$(random 32)}"

umask 077
for f in controlplane.env dataplane.env admin.env nats.conf; do
  [ -e "$ETC/$f" ] || render "$here/share/routeiq/etc/$f" >"$ETC/$f"
done
[ -e "$ETC/config.yaml" ] || cp "$here/share/routeiq/config/airgap.yaml" "$ETC/config.yaml"
umask 022

mkdir -p "$PREFIX/lib/systemd/system"
for unit in "$here"/share/routeiq/systemd/*.service; do
  render "$unit" >"$PREFIX/lib/systemd/system/$(basename "$unit")"
done

if [ "$SYSTEMD" = 1 ]; then
  id routeiq >/dev/null 2>&1 || useradd --system --home-dir "$STATE" --shell /usr/sbin/nologin routeiq
  chown -R routeiq:routeiq "$STATE"
  chgrp routeiq "$ETC"/*.env "$ETC/nats.conf" "$ETC/config.yaml" && chmod 640 "$ETC"/*.env "$ETC/nats.conf" "$ETC/config.yaml"
  cp "$PREFIX"/lib/systemd/system/*.service /etc/systemd/system/
  if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
fi

cat <<MSG
RouteIQ $(cat "$here/VERSION") installed in $PREFIX (configuration in $ETC, state in $STATE).
Next:
  1. PostgreSQL: create the database and user named in $ETC/controlplane.env (DATABASE_URL).
  2. Point ROUTEIQ_LOCAL_LLM_BASE in $ETC/controlplane.env at your on-prem model server,
     or edit $ETC/config.yaml.
  3. Back up $ETC/controlplane.env (it holds the salt key) with the database.
  4. systemctl enable --now routeiq-nats routeiq-controlplane routeiq-dataplane routeiq-admin
     (units in $PREFIX/lib/systemd/system; --systemd installs them).
The master key is ROUTEIQ_MASTER_KEY in $ETC/controlplane.env.
MSG
