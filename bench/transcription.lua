-- wrk script: an audio transcription upload, multipart/form-data with `model` first and a
-- 1 MiB PCM WAV (16 kHz mono, about 32 s of silence), to /v1/audio/transcriptions on both
-- paths. The gateway streams the file part through; its RSS should not grow with it.
local function le32(n)
  return string.char(n % 256, math.floor(n / 256) % 256, math.floor(n / 65536) % 256,
                     math.floor(n / 16777216) % 256)
end
local data = 1024 * 1024 - 44
local wav = "RIFF" .. le32(36 + data) .. "WAVEfmt " .. le32(16) .. string.char(1, 0, 1, 0)
  .. le32(16000) .. le32(32000) .. string.char(2, 0, 16, 0) .. "data" .. le32(data)
  .. string.rep("\0", data)
local b = "routeiq-bench-boundary"
wrk.method = "POST"
wrk.path = "/v1/audio/transcriptions"
wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. b
wrk.headers["Authorization"] = "Bearer sk-bench"
wrk.body = "--" .. b .. "\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nbench\r\n"
  .. "--" .. b .. "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
  .. "Content-Type: audio/wav\r\n\r\n" .. wav .. "\r\n--" .. b .. "--\r\n"
