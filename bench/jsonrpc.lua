-- wrk script: one JSON-RPC request, the same every time, for bench/jsonrpc.sh.
--   BENCH_BODY     the request body
--   BENCH_EXPECT   text every reply must carry (the result); replies without it (a
--                  JSON-RPC error is HTTP 200) are counted and printed by done() as
--                  "Responses without the result: N"
--   BENCH_HEADERS  extra headers, `Name: value` separated by `|`
--   BENCH_KEY      if set, sent as `authorization: Bearer` (the gateway's master key; the
--                  servers behind it ignore it)
local body = os.getenv("BENCH_BODY") or ""
local expect = os.getenv("BENCH_EXPECT") or ""
local key = os.getenv("BENCH_KEY") or ""

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
for pair in string.gmatch(os.getenv("BENCH_HEADERS") or "", "[^|]+") do
  local name, value = string.match(pair, "^%s*([^:]+):%s*(.-)%s*$")
  if name then
    wrk.headers[name] = value
  end
end
if key ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. key
end
wrk.body = body

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  bad = 0
end

function response(status, headers, reply)
  if not reply or not string.find(reply, expect, 1, true) then
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
