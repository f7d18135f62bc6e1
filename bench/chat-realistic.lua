-- wrk script: a realistic OpenAI chat completion request (about 470 bytes): a system and a
-- user turn, sampling parameters, max_tokens, n, stream and an end user.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
wrk.body = '{"model":"bench","messages":[{"role":"system","content":"You are a careful assistant for an online bookshop. Answer in two or three sentences, cite the catalogue section when you can, and never invent prices or availability."},{"role":"user","content":"I am looking for a readable introduction to distributed systems for a team of backend engineers. Which book would you suggest?"}],"temperature":0.7,"top_p":0.95,"max_tokens":256,"n":1,"stream":false,"user":"bench-user-0001"}'
