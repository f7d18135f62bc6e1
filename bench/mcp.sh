#!/usr/bin/env bash
# MCP gateway overhead: the same MCP `tools/call` (`add`, a=2, b=3; bare POSTs, no
# session) straight to an MCP server written with the official Python SDK
# (bench/mcp_server.py: MCPServer, streamable HTTP, stateless, JSON replies) and through
# routeiq-dataplane's /mcp/bench endpoint to it (bench/mcp-config.yaml.in), at
# concurrency 1 and 16 (bench/jsonrpc.sh runs it and says what it reports).
#
#   bench/mcp.sh [duration-seconds]            (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
export BENCH_NAME=MCP \
  BENCH_SERVER="$VENV/bin/python bench/mcp_server.py __PORT__" \
  BENCH_DIRECT_PATH=/mcp BENCH_GW_PATH=/mcp/bench BENCH_CONFIG=bench/mcp-config.yaml.in \
  BENCH_BODY='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"a":2,"b":3}}}' \
  BENCH_EXPECT='"text":"5"' BENCH_IMPORT=mcp.server \
  BENCH_HEADERS='Accept: application/json, text/event-stream|MCP-Protocol-Version: 2025-11-25'
exec bench/jsonrpc.sh "$@"
