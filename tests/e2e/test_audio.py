"""Audio with the official openai SDK: transcriptions and translations of a real WAV made
in the test (multipart, streamed to the deployment), and speech (the audio streamed back),
to OpenAI and Azure deployments, with usage and cost."""

import io
import math
import struct
import wave

import httpx
import openai
import pytest

from test_routing import MASTER_KEY, gateway, mock  # noqa: F401  (the module's fixtures)

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}


def config(mock) -> dict:
    return {
        "model_list": [
            {"model_name": "whisper",
             "litellm_params": {"model": "openai/whisper-1", "api_base": f"{mock.url}/v1",
                                "api_key": "sk-up"},
             "model_info": {"id": "whisper-1", "mode": "audio_transcription"}},
            {"model_name": "azure-whisper",
             "litellm_params": {"model": "azure/my-whisper", "api_base": mock.url,
                                "api_key": "az-key", "api_version": "2024-06-01"},
             "model_info": {"id": "my-whisper", "mode": "audio_transcription",
                            "input_cost_per_second": 0.001}},
            {"model_name": "tts",
             "litellm_params": {"model": "openai/tts-1", "api_base": f"{mock.url}/v1",
                                "api_key": "sk-up"},
             "model_info": {"id": "tts-1", "mode": "audio_speech"}},
            {"model_name": "claude",
             "litellm_params": {"model": "anthropic/claude-sonnet-4-5", "api_base": mock.url,
                                "api_key": "k"},
             "model_info": {"id": "claude-sonnet-4-5"}},
        ],
        "router_settings": {"num_retries": 0},
    }


def wav(seconds: float, rate: int = 16000) -> bytes:
    """A mono 16-bit PCM WAV of a 440 Hz tone."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        frames = int(seconds * rate)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
                               for i in range(frames)))
    return buf.getvalue()


def last(mock) -> dict:
    return httpx.get(f"{mock.url}/__last_request").json()


def client(g) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{g.url}/v1", api_key=MASTER_KEY, max_retries=0)


def test_transcription_and_translation_with_cost(mock, gateway):
    g = gateway(config(mock))
    audio = wav(3.0)
    raw = client(g).audio.transcriptions.with_raw_response.create(
        model="whisper", file=("hello.wav", audio, "audio/wav"), language="en")
    r = raw.parse()
    assert r.text == f"mock transcription of {len(audio)} bytes"
    # whisper-1's built-in price: $0.006 a minute, 3 seconds reported.
    assert float(raw.headers["x-litellm-response-cost"]) == pytest.approx(3 * 0.0001)
    sent = last(mock)
    assert sent["path"] == "/v1/audio/transcription"
    assert sent["body"]["model"] == "whisper-1" and sent["body"]["language"] == "en"
    assert sent["body"]["file_bytes"] == len(audio)
    assert sent["headers"]["authorization"] == "Bearer sk-up"

    t = client(g).audio.translations.create(model="whisper", file=("x.wav", audio))
    assert t.text == f"mock translation of {len(audio)} bytes"

    text = client(g).audio.transcriptions.create(
        model="whisper", file=("x.wav", audio), response_format="text")
    assert text.strip() == f"mock transcription of {len(audio)} bytes"

    raw = client(g).audio.transcriptions.with_raw_response.create(
        model="azure-whisper", file=("x.wav", audio), response_format="verbose_json")
    assert raw.parse().duration == pytest.approx(3.0)
    assert float(raw.headers["x-litellm-response-cost"]) == pytest.approx(3.0 * 0.001)
    assert last(mock)["headers"]["api-key"] == "az-key"


def test_model_after_the_file_and_a_large_upload(mock, gateway):
    g = gateway(config(mock))
    audio = wav(40.0)  # about 1.3 MB, more than the head the gateway reads
    # curl's order: the file first, the model after it.
    r = httpx.post(f"{g.url}/v1/audio/transcriptions", headers=AUTH, timeout=30,
                   files=[("file", ("a.wav", audio, "audio/wav"))],
                   data={"model": "whisper"})
    # httpx puts data fields first; build the body by hand for the other order.
    boundary = "rq-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
            f"Content-Type: audio/wav\r\n\r\n").encode() + audio + (
        f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper"
        f"\r\n--{boundary}--\r\n").encode()
    r = httpx.post(f"{g.url}/v1/audio/transcriptions", timeout=30, content=body,
                   headers={**AUTH, "content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 200, r.text
    assert r.json()["text"] == f"mock transcription of {len(audio)} bytes"
    assert last(mock)["body"]["model"] == "whisper-1"
    # A chunked upload (no content-length) is read whole, within the size limit.
    def chunks():
        for i in range(0, len(body), 65536):
            yield body[i:i + 65536]
    r = httpx.post(f"{g.url}/v1/audio/transcriptions", timeout=30, content=chunks(),
                   headers={**AUTH, "content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 200, r.text


def test_bad_uploads_are_clear_4xx(mock, gateway):
    g = gateway(config(mock))
    c = client(g)
    audio = wav(1.0)
    for files, data, param in [
        ({"file": ("a.wav", audio)}, {}, "model"),
        (None, {"model": "whisper"}, "file"),
    ]:
        r = httpx.post(f"{g.url}/v1/audio/transcriptions", headers=AUTH, timeout=10,
                       files=files, data=data) if files else httpx.post(
            f"{g.url}/v1/audio/transcriptions", headers=AUTH, timeout=10, data=data,
            files={"other": ("x.txt", b"x")})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == param, r.text
    r = httpx.post(f"{g.url}/v1/audio/transcriptions", headers=AUTH, timeout=10,
                   files={"file": ("a.wav", audio)},
                   data={"model": "whisper", "response_format": "mp3"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "response_format", r.text
    r = httpx.post(f"{g.url}/v1/audio/transcriptions", headers=AUTH, json={"model": "whisper"})
    assert r.status_code == 400 and "multipart" in r.json()["error"]["message"]
    # Not a WAV: the provider's 400, passed on.
    with pytest.raises(openai.BadRequestError):
        c.audio.transcriptions.create(model="whisper", file=("a.txt", b"not audio at all"))
    # The wrong endpoint for the model group, and a provider without audio.
    with pytest.raises(openai.BadRequestError) as e:
        c.audio.transcriptions.create(model="tts", file=("a.wav", audio))
    assert e.value.body["code"] == "wrong_endpoint"
    with pytest.raises(openai.BadRequestError) as e:
        c.audio.transcriptions.create(model="claude", file=("a.wav", audio))
    assert "audio transcriptions" in e.value.body["message"]
    r = httpx.post(f"{g.url}/v1/audio/transcriptions", files={"file": ("a.wav", audio)},
                   data={"model": "whisper"})
    assert r.status_code == 401
    # Over the request size limit: 413, nothing sent.
    small = gateway({**config(mock), "general_settings": {"max_request_size_mb": 1}})
    big = wav(40.0)
    r = httpx.post(f"{small.url}/v1/audio/transcriptions", headers=AUTH, timeout=30,
                   files={"file": ("a.wav", big)}, data={"model": "whisper"})
    assert r.status_code == 413, r.text


def test_speech_streams_back(mock, gateway):
    g = gateway(config(mock))
    c = client(g)
    with c.audio.speech.with_streaming_response.create(
            model="tts", voice="alloy", input="Hello there, world!") as r:
        assert r.headers["content-type"] == "audio/mpeg"
        audio = b"".join(r.iter_bytes())
        cost = float(r.headers["x-litellm-response-cost"])
    assert audio.startswith(b"ID3") and len(audio) == 4 + 19 * 100
    assert cost == pytest.approx(19 * 0.000015)
    assert last(mock)["body"]["model"] == "tts-1"
    wav_out = c.audio.speech.create(model="tts", voice="alloy", input="hi",
                                    response_format="wav")
    assert wav_out.content.startswith(b"RIFF")
    with pytest.raises(openai.BadRequestError) as e:
        c.audio.speech.create(model="tts", voice="alloy", input="")
    assert e.value.body["param"] == "input"
