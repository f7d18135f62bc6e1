-- wrk script: bench/chat.lua with a prompt no other request has (`__N__` becomes the
-- thread's number and the request's), so the response cache never hits.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
wrk.body = '{"model":"bench","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello in one short sentence, please. __N__"}],"max_tokens":32,"temperature":0}'
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, (wrk.body:gsub("__N__", tostring(tid) .. "-" .. n)))
end
