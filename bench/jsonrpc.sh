#!/usr/bin/env bash
# The JSON-RPC gateways' overhead benchmark, run by bench/mcp.sh and bench/a2a.sh. In one
# run it measures the same wrk load of one JSON-RPC request (bench/jsonrpc.lua) straight to
# a server written with an official Python SDK and through routeiq-dataplane to that
# server, at concurrency 1 and 16, and reports one markdown table row per concurrency:
# latency on both paths and what the gateway adds, throughput, gateway CPU time per call,
# and the replies that were not 2xx or did not carry the result (both must be 0).
#
#   BENCH_NAME=... BENCH_SERVER=... bench/jsonrpc.sh [duration-seconds]   (default 10)
#
# BENCH_NAME        what is measured (for messages)
# BENCH_SERVER      the command that starts the server, `__PORT__` its port
# BENCH_DIRECT_PATH the server's JSON-RPC path; BENCH_GW_PATH the gateway's for it
# BENCH_CONFIG      the gateway's config (`__PORT__` the server's port; master key sk-bench)
# BENCH_BODY        the request; BENCH_EXPECT what every reply carries; BENCH_HEADERS extra
#                   headers (`Name: value|...`); BENCH_IMPORT a module the server needs
#
# ROUTEIQ_DATAPLANE_BIN=/path/to/routeiq-dataplane uses that binary instead of building
# the release one (figures from a debug build are not for docs/benchmarks.md).
#
# Needs: wrk (Debian package; installed if missing), the venv with the SDKs
# (tests/e2e/requirements.txt), a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

DURATION="${1:-10}"
KEY=sk-bench
: "${BENCH_NAME:?}" "${BENCH_SERVER:?}" "${BENCH_DIRECT_PATH:?}" "${BENCH_GW_PATH:?}" \
  "${BENCH_CONFIG:?}" "${BENCH_BODY:?}" "${BENCH_EXPECT:?}" "${BENCH_IMPORT:?}"
export BENCH_BODY BENCH_EXPECT BENCH_HEADERS="${BENCH_HEADERS:-}" BENCH_KEY="$KEY"
apt_install wrk curl
if ! "$VENV/bin/python" -c "import $BENCH_IMPORT" >/dev/null 2>&1; then
  ensure_python_venv tests/e2e/requirements.txt
fi
if [ -n "${ROUTEIQ_DATAPLANE_BIN:-}" ]; then
  GW_BIN="$ROUTEIQ_DATAPLANE_BIN"
  [ -x "$GW_BIN" ] || { echo "error: ROUTEIQ_DATAPLANE_BIN=$GW_BIN is not an executable" >&2; exit 1; }
  step "using $GW_BIN (no build)"
else
  step "cargo build --release -p routeiq-dataplane"
  cargo build --release --locked -p routeiq-dataplane >&2
  GW_BIN="$CARGO_TARGET_DIR/release/routeiq-dataplane"
fi

work="$(mktemp -d)"
cleanup() { # SIGTERM, up to 5 s for a graceful exit, then SIGKILL
  local pids pid alive
  pids="$(cat "$work"/*.pid 2>/dev/null || true)"
  for pid in $pids; do kill "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=
    for pid in $pids; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ -n "$alive" ] || break
    sleep 0.1
  done
  for pid in $pids; do kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
SERVER_PORT="$(free_port)"
GW_PORT="$(free_port)"
DIRECT_URL="http://127.0.0.1:$SERVER_PORT$BENCH_DIRECT_PATH"
GW_URL="http://127.0.0.1:$GW_PORT$BENCH_GW_PATH"

fail() {
  echo "error: $*" >&2
  for log in "$work/server.log" "$work/gw.log"; do
    if [ -s "$log" ]; then
      echo "--- last lines of $(basename "$log"):" >&2
      tail -20 "$log" >&2
    fi
  done
  exit 1
}

# One request with curl, as jsonrpc.lua sends it: prints the reply body.
call_once() { # url
  local headers=() pair
  IFS='|' read -ra pairs <<<"$BENCH_HEADERS"
  for pair in "${pairs[@]}"; do [ -n "$pair" ] && headers+=(-H "$pair"); done
  curl -s --max-time 10 -X POST "$1" -H 'content-type: application/json' "${headers[@]}" \
    -H "authorization: Bearer $KEY" -d "$BENCH_BODY"
}

# shellcheck disable=SC2086 # the command's words
${BENCH_SERVER//__PORT__/$SERVER_PORT} >"$work/server.log" 2>&1 &
echo $! > "$work/server.pid"
ok=
for _ in $(seq 200); do
  call_once "$DIRECT_URL" 2>/dev/null | grep -qF "$BENCH_EXPECT" && { ok=1; break; }
  sleep 0.05
done
[ -n "$ok" ] || fail "the $BENCH_NAME server on port $SERVER_PORT did not answer with $BENCH_EXPECT"

sed -e "s#__PORT__#$SERVER_PORT#g" "$BENCH_CONFIG" > "$work/config.yaml"
ROUTEIQ_LOG=warn "$GW_BIN" --config "$work/config.yaml" \
  --listen "127.0.0.1:$GW_PORT" >"$work/gw.log" 2>&1 &
echo $! > "$work/gw.pid"
GW_PID=$(cat "$work/gw.pid")
ok=
for _ in $(seq 200); do
  curl -sf "http://127.0.0.1:$GW_PORT/health/liveliness" >/dev/null 2>&1 && { ok=1; break; }
  kill -0 "$GW_PID" 2>/dev/null || fail "the gateway exited"
  sleep 0.05
done
[ -n "$ok" ] || fail "the gateway on port $GW_PORT did not come up"

reply="$(call_once "$GW_URL" || true)"
grep -qF "$BENCH_EXPECT" <<<"$reply" \
  || fail "the gateway did not answer with the server's result; it answered: ${reply:-nothing}"
echo "gateway check: $reply" >&2

cpu_ticks() { awk '{print $14 + $15}' "/proc/$GW_PID/stat"; }
TCK=$(getconf CLK_TCK)

run_wrk() { # url concurrency -> wrk output
  local threads=$(( $2 < 2 ? 1 : 2 ))
  wrk -t"$threads" -c"$2" -d"${DURATION}s" --latency -s bench/jsonrpc.lua "$1"
}

# Warm both paths (the gateway's upstream session and connection pool, the server).
wrk -t1 -c4 -d2s -s bench/jsonrpc.lua "$GW_URL" >/dev/null

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r); duration ${DURATION}s per run; gateway $GW_BIN"
echo
echo "| concurrency | direct p50 / p99 ms | gateway p50 / p99 ms | added p50 / p99 ms | req/s direct → gateway | gateway CPU per call | non-2xx direct / gateway | without the result direct / gateway |"
echo "|---|---|---|---|---|---|---|---|"
status=0
for c in 1 16; do
  run_wrk "$DIRECT_URL" "$c" > "$work/direct.$c"
  before=$(cpu_ticks)
  run_wrk "$GW_URL" "$c" > "$work/gw.$c"
  after=$(cpu_ticks)
  python3 - "$work/direct.$c" "$work/gw.$c" "$c" "$(( after - before ))" "$TCK" <<'PY' || { status=1; cat "$work/direct.$c" "$work/gw.$c" >&2; }
import re, sys
direct, gw, conc, ticks, tck = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
def parse(path):
    t = open(path).read()
    unit = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    pct = {m.group(1): float(m.group(2)) * unit[m.group(3)] for m in re.finditer(r"^\s+(50|99)\.000%\s+([\d.]+)(us|ms|s)", t, re.M)}
    if not pct:
        pct = {m.group(1): float(m.group(2)) * unit[m.group(3)] for m in re.finditer(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)", t, re.M)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
    reqs = int(re.search(r"(\d+) requests in", t).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    socket = re.search(r"Socket errors: (.*)", t)
    missing = int(re.search(r"Responses without the result: (\d+)", t).group(1))
    return pct["50"], pct["99"], rps, reqs, int(non2xx.group(1)) if non2xx else 0, missing, socket.group(1) if socket else None
d, g = parse(direct), parse(gw)
cpu_us = ticks / tck * 1e6 / max(g[3], 1)
print(f"| {conc} | {d[0]:.3f} / {d[1]:.3f} | {g[0]:.3f} / {g[1]:.3f} | **{g[0]-d[0]:.3f} / {g[1]-d[1]:.3f}** "
      f"| {d[2]:,.0f} → {g[2]:,.0f} | {cpu_us:.1f} µs | {d[4]} / {g[4]} | {d[5]} / {g[5]} |")
bad = []
for path, r in (("direct", d), ("gateway", g)):
    if r[4] or r[5]:
        bad.append(f"{path}: {r[4]} non-2xx, {r[5]} without the result of {r[3]}")
    if r[6]:
        print(f"note: c={conc} {path}: wrk socket errors: {r[6]}", file=sys.stderr)
if bad:
    print(f"error: c={conc}: " + "; ".join(bad), file=sys.stderr)
    sys.exit(1)
PY
done
if [ "$status" -ne 0 ]; then
  fail "some replies were not 2xx or did not carry the tool's result (wrk's outputs above)"
fi
if grep -q . "$work/gw.log"; then
  echo "gateway log (ROUTEIQ_LOG=warn):" >&2
  tail -20 "$work/gw.log" >&2
fi
