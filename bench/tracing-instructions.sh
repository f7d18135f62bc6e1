#!/usr/bin/env bash
# Instructions per request of the realistic chat request with tracing off, on with the
# sampler at 0 (every request unsampled), and on with every request sampled, counted by
# callgrind (bench/instructions.sh) against an OTLP/gRPC sink (bench/otlp_sink.py).
#
#   bench/tracing-instructions.sh [N]     (default 308: 1,540 spans, three full batches)
#
# The batch timer is held off (OTEL_BSP_SCHEDULE_DELAY=600000) so that only full batches of
# 512 spans are sent: every build compared exports the same spans within the run, and what
# is still queued when the gateway is stopped is the same for all of them.
# ROUTEIQ_BENCH_BIN counts another build (as in instructions.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
N="${1:-308}"
ensure_python_venv tests/e2e/requirements.txt
# A free port: a sink left over from an interrupted run would take the spans.
SINK_PORT=$(free_port)
"$VENV/bin/python" bench/otlp_sink.py "$SINK_PORT" > /dev/null 2>&1 &
sink=$!
trap 'kill $sink 2>/dev/null || true' EXIT
export OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none
run() { # mode [env...]
  local mode="$1"
  shift
  printf '%-8s ' "$mode"
  env "$@" bench/instructions.sh "$N" bench/chat-realistic.lua 2>&1 | tail -1
}
run off
run zero OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$SINK_PORT" \
  OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0
run sampled OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$SINK_PORT" \
  OTEL_TRACES_SAMPLER=parentbased_always_on OTEL_BSP_SCHEDULE_DELAY=600000
