-- wrk script: an OpenAI Responses API request (instructions, one user input, sampling
-- parameters, max_output_tokens), to /v1/responses on both paths.
wrk.method = "POST"
wrk.path = "/v1/responses"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
wrk.body = '{"model":"bench","instructions":"You are a careful assistant for an online bookshop. Answer in two or three sentences, cite the catalogue section when you can, and never invent prices or availability.","input":"I am looking for a readable introduction to distributed systems for a team of backend engineers. Which book would you suggest?","temperature":0.7,"top_p":0.95,"max_output_tokens":256,"stream":false,"user":"bench-user-0001"}'
