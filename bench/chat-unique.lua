-- wrk script: bench/chat.lua with a prompt no other request has, so the response cache
-- never hits. `__N__` becomes the time the thread started, its number and the request's:
-- one gateway serves several wrk runs (bench/overhead.sh's concurrencies, each at least
-- one run's duration after the last), and a later run must not send the prompts an
-- earlier one stored.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
wrk.body = '{"model":"bench","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello in one short sentence, please. __N__"}],"max_tokens":32,"temperature":0}'
local run = os.time()
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, (wrk.body:gsub("__N__", run .. "-" .. tid .. "-" .. n)))
end
