#!/usr/bin/env bash
# A2A gateway overhead: the same A2A 1.0 `SendMessage` (a message the agent answers with
# one Message, no task) straight to an agent written with the official a2a-sdk
# (tests/e2e/a2a_agent.py: its server classes under uvicorn) and through
# routeiq-dataplane's /a2a/bench endpoint to it (bench/a2a-config.yaml.in), at
# concurrency 1 and 16 (bench/jsonrpc.sh runs it and says what it reports).
#
#   bench/a2a.sh [duration-seconds]            (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
export BENCH_NAME=A2A \
  BENCH_SERVER="$VENV/bin/python tests/e2e/a2a_agent.py __PORT__ 1.0 /dev/null" \
  BENCH_DIRECT_PATH=/ BENCH_GW_PATH=/a2a/bench BENCH_CONFIG=bench/a2a-config.yaml.in \
  BENCH_BODY='{"jsonrpc":"2.0","id":"b1","method":"SendMessage","params":{"message":{"messageId":"m1","role":"ROLE_USER","parts":[{"text":"msg bench"}]}}}' \
  BENCH_EXPECT='echo: msg bench' BENCH_IMPORT=a2a.server \
  BENCH_HEADERS='A2A-Version: 1.0'
exec bench/jsonrpc.sh "$@"
