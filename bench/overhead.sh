#!/usr/bin/env bash
# Gateway overhead benchmark. In one run it measures the same wrk load straight to a fast
# mock upstream (nginx answering a fixed chat completion) and through routeiq-dataplane,
# at concurrency 1, 16 and 64, and reports added latency, throughput share, peak RSS and
# gateway CPU time per request. Each request body is measured in turn: by default the
# realistic one (bench/chat-realistic.lua: about 470 bytes, system and user turns, sampling
# parameters, max_tokens, n, stream, user), then the small one (bench/chat.lua).
#
#   bench/overhead.sh [duration-seconds] [config template] [wrk script...]
#       (defaults: 10, bench/config.yaml.in: one deployment; bench/config-latency.yaml.in:
#        three deployments with latency-based-routing; bench/config-bedrock.yaml.in: one
#        Bedrock deployment, translated to Converse and signed with SigV4 per request;
#        bench/config-anthropic.yaml.in: one Anthropic deployment, translated to Messages;
#        bench/config-learned.yaml.in: nine deployments routed by llmrouter-mlp, and
#        bench/config-learned-shadow.yaml.in: the same with llmrouter-svm in shadow; both
#        need ROUTEIQ_BENCH_ARTIFACTS, default /tmp/routeiq-artifacts, holding hashed/mlp
#        and hashed/svm, and ORT_DYLIB_PATH)
#
# Needs: nginx, wrk (Debian packages; installed if missing), a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

DURATION="${1:-10}"
CONFIG="${2:-bench/config.yaml.in}"
shift $(( $# < 2 ? $# : 2 ))
BODIES=("$@")
[ "${#BODIES[@]}" -gt 0 ] || BODIES=(bench/chat-realistic.lua bench/chat.lua)
apt_install nginx wrk
case "$CONFIG" in *learned*) export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$(ort_dylib)}" ;; esac
# ROUTEIQ_BENCH_BIN: another build of the gateway to measure, as an absolute path (e.g. an
# older commit's, to compare); by default this checkout's release build.
BIN="${ROUTEIQ_BENCH_BIN:-}"
if [ -z "$BIN" ]; then
  step "cargo build --release -p routeiq-dataplane"
  cargo build --release --locked -p routeiq-dataplane >&2
  BIN="$CARGO_TARGET_DIR/release/routeiq-dataplane"
fi

work="$(mktemp -d)"
trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; sleep 0.3; rm -rf "$work"' EXIT
# Free ports: a gateway left over from an interrupted run would share a fixed one
# (the listener sets SO_REUSEPORT) and answer part of the load unseen.
read -r NGINX_PORT GW_PORT < <(free_ports 2)

start_bench_upstream "$work" "$NGINX_PORT"

sed -e "s#__PORT__#$NGINX_PORT#g" -e "s#__ARTIFACTS__#${ROUTEIQ_BENCH_ARTIFACTS:-/tmp/routeiq-artifacts}#g" \
  "$CONFIG" > "$work/config.yaml"
ROUTEIQ_LOG=warn "$BIN" --config "$work/config.yaml" \
  --listen "127.0.0.1:$GW_PORT" >"$work/gw.log" 2>&1 &
echo $! > "$work/gw.pid"
GW_PID=$(cat "$work/gw.pid")
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$GW_PORT/health/liveliness" >/dev/null && break; sleep 0.05; done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$GW_PID/stat"; }
TCK=$(getconf CLK_TCK)

run_wrk() { # url concurrency script -> wrk output file
  local threads=$(( $2 < 2 ? 1 : 2 ))
  wrk -t"$threads" -c"$2" -d"${DURATION}s" --latency -s "$3" "$1/v1/chat/completions" > "$work/wrk.out"
  cat "$work/wrk.out"
}

# Warm both paths (connection pools, page cache).
wrk -t1 -c4 -d2s -s bench/chat.lua "http://127.0.0.1:$GW_PORT/v1/chat/completions" >/dev/null

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r); duration ${DURATION}s per run; config $CONFIG"
for body in "${BODIES[@]}"; do
echo "body: $body ($(sed -n "s/^wrk.body = '\(.*\)'$/\1/p" "$body" | wc -c) bytes)"
printf '%-5s %-8s %10s %10s %10s %12s %10s\n' conc path p50_ms p99_ms req_s cpu_us_req rss_mb
for c in 1 16 64; do
  run_wrk "http://127.0.0.1:$NGINX_PORT" "$c" "$body" > "$work/direct.$c"
  before=$(cpu_ticks)
  run_wrk "http://127.0.0.1:$GW_PORT" "$c" "$body" > "$work/gw.$c"
  after=$(cpu_ticks)
  python3 - "$work/direct.$c" "$work/gw.$c" "$c" "$(( after - before ))" "$TCK" "$GW_PID" <<'PY'
import re, sys
direct, gw, conc, ticks, tck, pid = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
def parse(path):
    t = open(path).read()
    unit = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    pct = {m.group(1): float(m.group(2)) * unit[m.group(3)] for m in re.finditer(r"^\s+(50|99)\.000%\s+([\d.]+)(us|ms|s)", t, re.M)}
    if not pct:
        pct = {m.group(1): float(m.group(2)) * unit[m.group(3)] for m in re.finditer(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)", t, re.M)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
    reqs = int(re.search(r"(\d+) requests in", t).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    return pct["50"], pct["99"], rps, reqs, int(errors.group(1)) if errors else 0
d, g = parse(direct), parse(gw)
rss = int(re.search(r"VmHWM:\s+(\d+)", open(f"/proc/{pid}/status").read()).group(1)) / 1024
cpu_us = ticks / tck * 1e6 / max(g[3], 1)
print(f"{conc:<5} {'direct':<8} {d[0]:10.3f} {d[1]:10.3f} {d[2]:10.0f}")
print(f"{conc:<5} {'gateway':<8} {g[0]:10.3f} {g[1]:10.3f} {g[2]:10.0f} {cpu_us:12.1f} {rss:10.1f}")
print(f"{conc:<5} {'added':<8} {g[0]-d[0]:10.3f} {g[1]-d[1]:10.3f} {100*g[2]/d[2]:9.1f}%  non-2xx: direct {d[4]}, gateway {g[4]}")
PY
done
done
