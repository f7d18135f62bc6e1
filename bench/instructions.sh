#!/usr/bin/env bash
# Instructions per request on the gateway's hot path, counted by callgrind: repeatable
# whatever else the machine is doing, so small changes can be compared where wall-clock
# figures are too noisy. Runs the release gateway (one worker) under valgrind against the
# same nginx upstream as overhead.sh and sends N and then 1 sequential chat requests over one
# connection; the difference divided by N-1 is the cost of one request.
#
#   bench/instructions.sh [N] [wrk script] [config template]
#       (defaults: 1001, bench/chat.lua, bench/config.yaml.in; e.g. bench/chat-realistic.lua,
#        bench/config-bedrock.yaml.in). A body's `__N__` becomes each request's number
#       (bench/chat-unique.lua: every prompt differs, so the response cache never hits;
#        bench/config-cache.yaml.in turns the cache on).
#   ROUTEIQ_BENCH_CACHESIM=1 also counts first-level instruction-cache misses per request
#       (callgrind's cache simulation: --cache-sim=yes; slower).
#   ROUTEIQ_BENCH_PROFILE=FILE keeps the N-request run's callgrind profile in FILE, for
#       callgrind_annotate (e.g. --inclusive=yes) or kcachegrind.
#
# Needs: valgrind, nginx (Debian packages; installed if missing), a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

N="${1:-1001}"
BODY="${2:-bench/chat.lua}"
CONFIG="${3:-bench/config.yaml.in}"
apt_install nginx valgrind
# ROUTEIQ_BENCH_BIN: another build of the gateway to count, as an absolute path (e.g. an
# older commit's, to compare); by default this checkout's release build.
BIN="${ROUTEIQ_BENCH_BIN:-}"
if [ -z "$BIN" ]; then
  step "cargo build --release -p routeiq-dataplane"
  cargo build --release --locked -p routeiq-dataplane >&2
  BIN="$CARGO_TARGET_DIR/release/routeiq-dataplane"
fi

work="$(mktemp -d)"
trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; sleep 0.3; rm -rf "$work"' EXIT
# Free ports: a gateway left over from an interrupted run would share a fixed one.
read -r NGINX_PORT GW_PORT < <(free_ports 2)
start_bench_upstream "$work" "$NGINX_PORT"
sed -e "s#__PORT__#$NGINX_PORT#g" "$CONFIG" > "$work/config.yaml"

count() { # requests -> instructions of the whole run
  ROUTEIQ_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" "${CACHESIM[@]}" \
    "$BIN" --config "$work/config.yaml" --listen "127.0.0.1:$GW_PORT" --threads 1 \
    >"$work/gw.log" 2>&1 &
  local pid=$!
  for _ in $(seq 300); do curl -sf "http://127.0.0.1:$GW_PORT/health/liveliness" >/dev/null && break; sleep 0.2; done
  python3 - "$1" "$GW_PORT" "$BODY" <<'PY'
import http.client, sys
n, port = int(sys.argv[1]), int(sys.argv[2])
body = open(sys.argv[3]).read().split("wrk.body = '", 1)[1].rsplit("'", 1)[0]
c = http.client.HTTPConnection("127.0.0.1", port)
for i in range(n):
    c.request("POST", "/v1/chat/completions", body.replace("__N__", str(i)),
              {"Authorization": "Bearer sk-bench", "Content-Type": "application/json"})
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status
PY
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
  # The totals line: instructions (Ir), then, with the cache simulation, I1 misses (I1mr).
  callgrind_annotate "$work/cg.out" 2>/dev/null | awk '/^Ir /{for (i = 1; i <= NF; i++) if ($i == "I1mr") k = i}
    /PROGRAM TOTALS/{gsub(/\([^)]*\)/, ""); gsub(",", ""); print $1, (k ? $k : 0)}'
}
CACHESIM=()
[ "${ROUTEIQ_BENCH_CACHESIM:-0}" = 1 ] && CACHESIM=(--cache-sim=yes)
read -r many many_i1 < <(count "$N")
[ -n "${ROUTEIQ_BENCH_PROFILE:-}" ] && cp "$work/cg.out" "$ROUTEIQ_BENCH_PROFILE"
read -r one one_i1 < <(count 1)
echo "instructions per request ($BODY, $CONFIG): $(( (many - one) / (N - 1) ))  (runs: $N requests $many, 1 request $one)"
if [ "${#CACHESIM[@]}" -gt 0 ]; then
  echo "I1 misses per request: $(( (many_i1 - one_i1) / (N - 1) ))  (runs: $many_i1, $one_i1)"
fi
