-- wrk script: one MCP `tools/call` (streamable HTTP, JSON-RPC) of the tool named by
-- BENCH_MCP_TOOL (default `add`) with a=2, b=3, bare: no initialize, no session id (the
-- bench server is stateless; the gateway keeps its own upstream session). BENCH_MCP_KEY,
-- if set, goes in `authorization: Bearer` (the gateway's master key; the server ignores
-- it). Every reply must carry the result: `"text":"5"`. Replies that do not (a JSON-RPC
-- error is HTTP 200) are counted and printed by done() as
-- "Responses without the result: N".
local tool = os.getenv("BENCH_MCP_TOOL") or "add"
local key = os.getenv("BENCH_MCP_KEY") or ""

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2025-11-25"
if key ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. key
end
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"' .. tool
  .. '","arguments":{"a":2,"b":3}}}'

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  bad = 0
end

function response(status, headers, body)
  if not body or not string.find(body, '"text":"5"', 1, true) then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do
    total = total + (t:get("bad") or 0)
  end
  io.write(string.format("Responses without the result: %d\n", total))
end
