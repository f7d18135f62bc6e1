#!/usr/bin/env bash
# The whole RouteIQ stack on one machine, from Debian packages and PyPI:
# PostgreSQL (initdb in a state directory), nats-server with JetStream, the control plane
# (importing config/example.yaml), one data plane attached to it, and the admin API.
#
#   deploy/local/up.sh          start (idempotent: a running stack is left as it is)
#   deploy/local/up.sh down     stop everything cleanly
#   deploy/local/up.sh status   what is running
#
# State lives in $ROUTEIQ_LOCAL (default ~/.cache/routeiq/local); ports: data plane 4000,
# admin API 4001, control plane gRPC 50051 and health 4100, NATS 4222, PostgreSQL 55432
# (each overridable: ROUTEIQ_LOCAL_*_PORT, ROUTEIQ_LOCAL_LISTEN, ROUTEIQ_LOCAL_ADMIN_LISTEN).
# ROUTEIQ_LOCAL_BIN_DIR runs binaries already built there instead of a release build.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh

STATE="${ROUTEIQ_LOCAL:-$ROUTEIQ_CACHE/local}"
PG_PORT="${ROUTEIQ_LOCAL_PG_PORT:-55432}"
NATS_PORT="${ROUTEIQ_LOCAL_NATS_PORT:-4222}"
GRPC="127.0.0.1:${ROUTEIQ_LOCAL_GRPC_PORT:-50051}"
CP_HTTP="127.0.0.1:${ROUTEIQ_LOCAL_CP_HTTP_PORT:-4100}"
DP_LISTEN="${ROUTEIQ_LOCAL_LISTEN:-0.0.0.0:4000}"
ADMIN_LISTEN="${ROUTEIQ_LOCAL_ADMIN_LISTEN:-0.0.0.0:4001}"
CONFIG="${ROUTEIQ_LOCAL_CONFIG:-config/example.yaml}"

BIN="${ROUTEIQ_LOCAL_BIN_DIR:-$CARGO_TARGET_DIR/release}"

# Whether service $1 runs: its recorded pid is alive (not a zombie: `kill -0` succeeds on
# a process killed but not yet reaped) and still runs the program recorded with it (not a
# reused pid).
running() {
  local pid state
  pid="$(cat "$STATE/$1.pid" 2>/dev/null)" || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  state="$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)"
  case "$state" in Z|X|x|"") return 1 ;; esac
  [ "$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -n1)" = "$(cat "$STATE/$1.cmd" 2>/dev/null)" ]
}

start_bg() { # name command...
  local name="$1"; shift
  if running "$name"; then return; fi
  "$@" >"$STATE/$name.log" 2>&1 &
  echo $! >"$STATE/$name.pid"
  printf '%s' "$1" >"$STATE/$name.cmd"
}

wait_url() { # url what
  for _ in $(seq 200); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "error: $2 did not come up; see $STATE/*.log" >&2
  exit 1
}

down() {
  for name in admin dataplane controlplane nats; do
    if running "$name"; then
      kill "$(cat "$STATE/$name.pid")"
      for _ in $(seq 100); do running "$name" || break; sleep 0.1; done
    fi
    rm -f "$STATE/$name.pid" "$STATE/$name.cmd"
  done
  stop_postgres "$STATE/pg"
  echo "stopped (state kept in $STATE)"
}

status() {
  for name in nats controlplane dataplane admin; do
    if running "$name"; then echo "$name: running (pid $(cat "$STATE/$name.pid"))"; else echo "$name: stopped"; fi
  done
  if [ -f "$STATE/pg/data/postmaster.pid" ]; then echo "postgresql: running (port $PG_PORT)"; else echo "postgresql: stopped"; fi
}

up() {
  ensure_build_deps
  ensure_python_venv deploy/local/requirements.txt
  if [ -z "${ROUTEIQ_LOCAL_BIN_DIR:-}" ]; then
    step "cargo build --release (control plane, data plane, admin API)"
    cargo build --release --locked -p routeiq-controlplane -p routeiq-dataplane -p routeiq-admin >&2
  fi
  mkdir -p "$STATE"
  chmod 755 "$STATE"
  [ -f "$STATE/salt_key" ] || { head -c 32 /dev/urandom | base64 >"$STATE/salt_key"; chmod 600 "$STATE/salt_key"; }

  step "PostgreSQL on 127.0.0.1:$PG_PORT"
  if [ ! -f "$STATE/pg/data/postmaster.pid" ]; then
    if [ -d "$STATE/pg/data" ]; then
      as_postgres "$(pg_bin)/pg_ctl -D '$STATE/pg/data' -l '$STATE/pg/log' -o \"-c listen_addresses=127.0.0.1 -p $PG_PORT -k '$STATE/pg'\" -w start" >/dev/null
    else
      rm -rf "$STATE/pg"
      start_postgres "$STATE/pg" "$PG_PORT" >/dev/null
      "$(pg_bin)/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -c "CREATE DATABASE routeiq" >/dev/null
    fi
  fi
  local db="postgres://postgres@127.0.0.1:$PG_PORT/routeiq"

  step "nats-server -js on 127.0.0.1:$NATS_PORT"
  start_bg nats "$VENV/bin/nats-server" -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$STATE/nats"
  for _ in $(seq 100); do grep -q "Server is ready" "$STATE/nats.log" && break; sleep 0.1; done

  step "routeiq-controlplane (gRPC $GRPC, health http://$CP_HTTP)"
  # A developer's disk: the usage stream reserves 1 GiB of NATS's file store, not 8.
  ROUTEIQ_USAGE_STREAM_BYTES="${ROUTEIQ_USAGE_STREAM_BYTES:-1073741824}" \
    ROUTEIQ_SALT_KEY="$(cat "$STATE/salt_key")" start_bg controlplane \
    "$BIN/routeiq-controlplane" --database-url "$db" --config "$CONFIG" \
    --nats "nats://127.0.0.1:$NATS_PORT" --grpc-listen "$GRPC" --http-listen "$CP_HTTP"
  wait_url "http://$CP_HTTP/health/readiness" "the control plane"

  step "routeiq-dataplane --nats (listening on $DP_LISTEN)"
  start_bg dataplane "$BIN/routeiq-dataplane" \
    --nats "nats://127.0.0.1:$NATS_PORT" --listen "$DP_LISTEN" --dataplane-id local-1
  wait_url "http://127.0.0.1:${DP_LISTEN##*:}/health/readiness" "the data plane"

  step "routeiq-admin (listening on $ADMIN_LISTEN)"
  start_bg admin "$BIN/routeiq-admin" \
    --listen "$ADMIN_LISTEN" --controlplane "http://$GRPC"
  wait_url "http://127.0.0.1:${ADMIN_LISTEN##*:}/health/readiness" "the admin API"

  cat <<MSG

RouteIQ is up (logs in $STATE):
  gateway        http://127.0.0.1:${DP_LISTEN##*:}   (master key from $CONFIG)
  admin API      http://127.0.0.1:${ADMIN_LISTEN##*:}   (docs at /docs, spec at /openapi.json)
  control plane  gRPC $GRPC, health http://$CP_HTTP/health/readiness
  NATS           nats://127.0.0.1:$NATS_PORT
  PostgreSQL     $db
Stop it with: deploy/local/up.sh down
MSG
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 [up|down|status]" >&2; exit 2 ;;
esac
