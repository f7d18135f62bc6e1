#!/usr/bin/env bash
# Tracing overhead: the same wrk load (the realistic chat body, c=16 by default) through
# three routeiq-dataplane processes on one config, measured in turn, ROUNDS times: tracing
# off (no OTLP endpoint), on with every trace sampled (parentbased_always_on), and on at
# 10 % (parentbased_traceidratio 0.1), the last two exporting to an OTLP/gRPC sink
# (bench/otlp_sink.py, which does not decode the spans). Reports requests/s and gateway CPU
# per request for each, and the throughput lost against tracing off in the same round.
#
#   bench/tracing.sh [duration-seconds] [rounds] [concurrency]   (defaults: 10, 3, 16)
#
# Needs: nginx, wrk (Debian packages; installed if missing), a release build, the e2e venv
# (grpcio) for the sink.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

DURATION="${1:-10}"
ROUNDS="${2:-3}"
CONC="${3:-16}"
apt_install nginx wrk
ensure_python_venv tests/e2e/requirements.txt
step "cargo build --release -p routeiq-dataplane"
cargo build --release --locked -p routeiq-dataplane >&2

work="$(mktemp -d)"
trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; sleep 0.3; rm -rf "$work"' EXIT
# Free ports: a gateway left over from an interrupted run would share a fixed one.
read -r NGINX_PORT SINK_PORT OFF_PORT ALL_PORT TENTH_PORT < <(free_ports 5)
start_bench_upstream "$work" "$NGINX_PORT"
sed -e "s#__PORT__#$NGINX_PORT#g" bench/config.yaml.in > "$work/config.yaml"
"$VENV/bin/python" bench/otlp_sink.py "$SINK_PORT" > "$work/sink.log" 2>&1 &
echo $! > "$work/sink.pid"

start_gw() { # name port [env...]
  local name="$1" port="$2"
  shift 2
  env ROUTEIQ_LOG=warn "$@" "$CARGO_TARGET_DIR/release/routeiq-dataplane" --config "$work/config.yaml" \
    --listen "127.0.0.1:$port" > "$work/$name.log" 2>&1 &
  echo $! > "$work/$name.pid"
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health/liveliness" >/dev/null && break; sleep 0.05; done
  wrk -t1 -c4 -d2s -s bench/chat.lua "http://127.0.0.1:$port/v1/chat/completions" >/dev/null
}
OTLP=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$SINK_PORT")
declare -A PORTS=([off]=$OFF_PORT [all]=$ALL_PORT [tenth]=$TENTH_PORT)
start_gw off "${PORTS[off]}"
start_gw all "${PORTS[all]}" "${OTLP[@]}" OTEL_TRACES_SAMPLER=parentbased_always_on
start_gw tenth "${PORTS[tenth]}" "${OTLP[@]}" OTEL_TRACES_SAMPLER=parentbased_traceidratio \
  OTEL_TRACES_SAMPLER_ARG=0.1
TCK=$(getconf CLK_TCK)

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r); ${DURATION}s runs, c=$CONC, body bench/chat-realistic.lua"
printf '%-6s %-6s %10s %12s %10s\n' round mode req_s cpu_us_req loss
for round in $(seq "$ROUNDS"); do
  declare -A RPS=()
  for mode in off all tenth; do
    pid=$(cat "$work/$mode.pid")
    before=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    wrk -t2 -c"$CONC" -d"${DURATION}s" -s bench/chat-realistic.lua \
      "http://127.0.0.1:${PORTS[$mode]}/v1/chat/completions" > "$work/wrk.out"
    after=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    reqs=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$work/wrk.out")
    rps=$(sed -n 's/^Requests\/sec: *\([0-9.]*\)/\1/p' "$work/wrk.out")
    non2xx=$(sed -n 's/^ *Non-2xx or 3xx responses: *\([0-9]*\)/\1/p' "$work/wrk.out")
    [ -z "$non2xx" ] || { echo "mode $mode: $non2xx failed requests" >&2; exit 1; }
    RPS[$mode]=$rps
    python3 -c "
import sys
rps, reqs, ticks, tck, off = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
loss = '' if not off else f'{100 * (1 - rps / float(off)):.1f}%'
print(f'{sys.argv[6]:<6} {sys.argv[7]:<6} {rps:10.0f} {ticks / tck * 1e6 / max(reqs, 1):12.1f} {loss:>10}')
" "$rps" "$reqs" "$(( after - before ))" "$TCK" "$([ "$mode" = off ] || echo "${RPS[off]}")" "$round" "$mode"
  done
done
kill "$(cat "$work/sink.pid")"
sleep 0.5
cat "$work/sink.log"
