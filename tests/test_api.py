"""The OpenAI-compatible API against a live local server with a scripted assistant: the official
`openai` client, every malformed request, concurrency, and the server still serving afterwards."""

import base64
import io
import threading
import time

import httpx
import numpy as np
import pytest
import soundfile as sf

from app.api import ApiConfig, create_app
from conftest import live_server
from app.chat import ModelHolder
from fusion.assistant import validate_conversation


class ScriptedAssistant:
    """Answers with what it received; slow enough per piece to overlap concurrent requests."""

    def __init__(self):
        self.lock = threading.Lock()
        self.listened = []  # (mode, recording, seconds of the clip) of each listen()

    def listen(self, messages, mode="e2e", key=""):
        clip = messages[-1]["content"][-1]
        self.listened.append((mode, key, len(clip.wave) / 16000))
        return "a tone so far"

    def heard(self, clip, mode):  # what the safety gate reads of a clip
        return "a tone"

    def classify_image(self, pixels, k=5):
        return [("coffee mug", 0.9)][:k]

    def image_classes(self, image, k=5):
        return self.classify_image(image.pixels, k)

    def chat(self, messages, mode="e2e", sampling=None, timings=None):
        validate_conversation(messages, mode)
        last = messages[-1]["content"]
        parts = [last] if isinstance(last, str) else last
        kinds = [type(p).__name__.lower() if not isinstance(p, str) else p for p in parts]
        words = [mode] + kinds + ["end", "of", "answer"]
        with self.lock:
            for i, w in enumerate(words[: sampling.max_new_tokens if sampling else None]):
                time.sleep(0.01)
                if timings is not None:
                    timings.new_tokens += 1
                    timings.hit_max_tokens = sampling is not None and timings.new_tokens >= sampling.max_new_tokens
                yield w + " "


@pytest.fixture(scope="module")
def holder():
    holder = ModelHolder(ScriptedAssistant)
    holder.wait(5)
    return holder


@pytest.fixture(scope="module")
def server(holder):
    with live_server(create_app(holder, ApiConfig(max_body_bytes=2_000_000, api_key=None))) as url:
        yield url


def png_b64() -> str:
    import cv2

    ok, buf = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    return base64.b64encode(buf.tobytes()).decode()


def wav_b64(seconds=1.0) -> str:
    t = np.arange(int(16000 * seconds)) / 16000
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 16000, format="WAV")
    return base64.b64encode(buf.getvalue()).decode()


def test_openai_client_text_image_audio_streaming_and_not(server):
    from openai import OpenAI

    client = OpenAI(base_url=server + "/v1", api_key="unused")
    assert {m.id for m in client.models.list()} == {"pocket-e2e", "pocket-cascade", "pocket-auto"}
    r = client.chat.completions.create(model="pocket-cascade", messages=[{"role": "user", "content": "hello"}])
    assert r.choices[0].message.content.split() == ["cascade", "hello", "end", "of", "answer"]
    assert r.choices[0].finish_reason == "stop" and r.usage.completion_tokens == 5
    content = [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png_b64()}"}},
               {"type": "input_audio", "input_audio": {"data": wav_b64(), "format": "wav"}},
               {"type": "text", "text": "what"}]
    stream = client.chat.completions.create(model="pocket-e2e", messages=[{"role": "user", "content": content}],
                                            stream=True, max_tokens=3)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text.split() == ["e2e", "image", "audio"]
    assert chunks[-1].choices[0].finish_reason == "length"


def test_local_image_files_are_accepted_inside_the_allowed_folder(tmp_path):
    import cv2

    path = tmp_path / "x.png"
    cv2.imwrite(str(path), np.zeros((4, 4, 3), np.uint8))
    holder = ModelHolder(ScriptedAssistant)
    holder.wait(5)
    with live_server(create_app(holder, ApiConfig(local_files=tmp_path))) as server:
        r = httpx.post(server + "/v1/chat/completions", json={"model": "pocket-e2e", "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"file://{path}"}}]}]})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"].split()[1] == "image"


BAD = [
    ("not json", 400, "invalid_json"),
    ({"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}, 404, "model_not_found"),
    ({"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": "x"}]}]}, 400,
     "unsupported_content_type"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]}]},
     400, "invalid_base64"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,"
                                                                                       + base64.b64encode(b"text").decode()}}]}]},
     400, "invalid_image"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": wav_b64(), "format": "aiff"}}]}]},
     400, "unsupported_audio"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": base64.b64encode(b"noise").decode(), "format": "wav"}}]}]},
     400, "unsupported_audio"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png_b64()}"}}] * 9}]},
     400, "too_many_images"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]},
     400, "url_not_supported"),
    ({"messages": []}, 400, None),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": 9}, 400, None),
    ({"messages": [{"role": "user", "content": "  "}]}, 400, "invalid_input"),
    ({"messages": [{"role": "user", "content": "x" * 3_000_000}]}, 413, "payload_too_large"),
]


@pytest.mark.parametrize("body,status,code", BAD)
def test_malformed_requests_get_openai_shaped_errors_and_the_server_keeps_serving(server, body, status, code):
    kw = {"content": body} if isinstance(body, str) else {"json": body}
    r = httpx.post(server + "/v1/chat/completions", **kw, timeout=30)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"] and err["type"]
    if code:
        assert err["code"] == code
    ok = httpx.post(server + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert ok.status_code == 200


def test_twenty_concurrent_requests_all_complete(server):
    results = [None] * 20

    def go(i):
        r = httpx.post(server + "/v1/chat/completions", timeout=60,
                       json={"model": "pocket-e2e", "messages": [{"role": "user", "content": f"q{i}"}]})
        results[i] = r.json()["choices"][0]["message"]["content"].split()[1]

    threads = [threading.Thread(target=go, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [f"q{i}" for i in range(20)]


def test_a_client_that_stops_reading_does_not_block_others(server):
    slow = httpx.Client(timeout=30)
    with slow.stream("POST", server + "/v1/chat/completions", json={
            "stream": True, "messages": [{"role": "user", "content": "slow reader"}]}) as r:
        next(r.iter_lines())  # read one line, then stall while another request is served
        t0 = time.perf_counter()
        other = httpx.post(server + "/v1/chat/completions", timeout=30,
                           json={"messages": [{"role": "user", "content": "fast"}]})
        assert other.status_code == 200 and time.perf_counter() - t0 < 10


def test_an_api_key_is_required_when_configured():
    from fastapi.testclient import TestClient

    holder = ModelHolder(ScriptedAssistant)
    holder.wait(5)
    client = TestClient(create_app(holder, ApiConfig(api_key="sekrit")))
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer sekrit"}).status_code == 200


def test_listen_hands_the_recording_so_far_to_the_assistant_and_answers_nothing(server, holder):
    """POST /v1/pocket/listen (a client sends the recording so far every half second while it records)."""
    body = {"model": "pocket-e2e", "recording": "r1",
            "messages": [{"role": "user", "content": [{"type": "input_audio",
                                                       "input_audio": {"data": wav_b64(1.5), "format": "wav"}}]}]}
    r = httpx.post(server + "/v1/pocket/listen", json=body, timeout=30)
    assert r.status_code == 200 and r.json() == {"listening": True, "heard": "a tone so far"}
    assert holder.get().inner.listened[-1] == ("e2e", "r1", 1.5)
    bad = httpx.post(server + "/v1/pocket/listen", json={**body, "model": "gpt-4"}, timeout=30)
    assert bad.status_code == 404 and bad.json()["error"]["param"] == "model"  # as chat completions says
    assert httpx.post(server + "/v1/pocket/listen", content=b"{", timeout=30).json()["error"]["code"] == "invalid_json"
