"""The API as a hostile client would try it: no file leaves the machine, the key covers every route,
work per request is bounded, and values a client can send get a 400, never a 500."""

import base64
import io
import threading
import time

import cv2
import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from app.api import ApiConfig, asgi_app, create_app
from app.chat import ModelHolder
from conftest import live_server
from fusion.assistant import validate_conversation


class SlowAssistant:
    """Streams words until it is stopped, and notes when it was; transcribes a clip as its length."""

    def __init__(self):
        self.closed_at = None
        self.lock = threading.Lock()

    def chat(self, messages, mode="e2e", sampling=None, timings=None):
        validate_conversation(messages, mode)
        try:
            for i in range(sampling.max_new_tokens if sampling else 10_000):
                time.sleep(0.02)
                if timings is not None:
                    timings.new_tokens += 1
                yield f"w{i} "
        finally:
            self.closed_at = time.monotonic()

    def heard(self, clip, mode):
        return "a tone"

    def transcribe(self, wave):
        return f"{len(wave)} samples"

    def image_classes(self, image, k=5):
        return [("coffee mug", 0.9)][:k]

    def classify_image(self, pixels, k=5):
        return [("coffee mug", 0.9)][:k]


@pytest.fixture(scope="module")
def bot():
    holder = ModelHolder(SlowAssistant)
    holder.wait(5)
    return holder


def png(rgb=(10, 200, 30)) -> bytes:
    return cv2.imencode(".png", np.full((8, 8, 3), rgb, np.uint8))[1].tobytes()


def wav_b64(seconds=0.5) -> str:
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(np.arange(int(16000 * seconds)) / 16000 * 2 * np.pi * 300)).astype(np.float32),
             16000, format="WAV")
    return base64.b64encode(buf.getvalue()).decode()


# -- no file leaves the machine ------------------------------------------------------------------------

@pytest.fixture()
def planted(tmp_path):
    """A secret photo outside the allowed folder, a photo inside it, and a link inside pointing out."""
    allowed, secret = tmp_path / "allowed", tmp_path / "secret"
    allowed.mkdir()
    secret.mkdir()
    (secret / "secret.png").write_bytes(png())
    (allowed / "ok.png").write_bytes(png())
    (allowed / "link.png").symlink_to(secret / "secret.png")
    return allowed, secret / "secret.png"


def probes(allowed, secret):
    rel = "../secret/secret.png"
    return [str(secret), f"file://{secret}", rel, f"file://{rel}", "%2e%2e/secret/secret.png",
            f"file://{str(secret).replace('/', '%2F')}", f"FILE://{secret}", f"File://{secret}", str(allowed / "link.png"),
            f"file://{allowed}/../secret/secret.png", "/etc/shadow", "/proc/self/environ", f"file://{secret}.missing",
            str(allowed / "missing.png")]


def chat_with_image(client, url):
    return client.post("/v1/chat/completions", json={"messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "hi"}]}],
        "max_tokens": 2})


@pytest.mark.parametrize("folder", [False, True])
def test_no_path_outside_the_allowed_folder_is_read_and_refusals_do_not_tell_what_exists(bot, planted, folder):
    allowed, secret = planted
    client = TestClient(create_app(bot, ApiConfig(local_files=allowed if folder else None)))
    answers = {url: chat_with_image(client, url) for url in probes(allowed, secret)}
    for url, r in answers.items():
        assert r.status_code == 400 and r.json()["error"]["code"] == "local_file_refused", (url, r.text)
    assert len({r.json()["error"]["message"] for r in answers.values()}) == 1  # one refusal, whatever the path
    inside = chat_with_image(client, str(allowed / "ok.png"))
    assert inside.status_code == (200 if folder else 400)


def test_the_evaluation_endpoint_reads_only_media_sent_inline(bot, planted):
    allowed, secret = planted
    client = TestClient(create_app(bot, ApiConfig(local_files=allowed)))
    for field, task in (("audio", "asr"), ("image", "mushroom")):
        case = {"id": "x", "task": task, field: str(secret), "answer": "a", "metric": "wer"}
        r = client.post("/v1/pocket/run", json={"case": case})
        assert r.status_code == 400 and r.json()["error"]["code"] == "missing_media", r.text
    inline = {"case": {"id": "x", "task": "asr", "audio": "/etc/shadow", "answer": "a", "metric": "wer"},
              "audio": wav_b64(0.5)}
    r = client.post("/v1/pocket/run", json=inline)
    assert r.status_code == 200 and r.json()["outcome"]["answer"] == "8000 samples"  # the clip sent, not the path
    r = client.post("/v1/pocket/run", json={"case": {"id": "x", "task": "asr", "audio": None, "answer": "a",
                                                     "metric": "wer"}})
    assert r.status_code == 400 and r.json()["error"]["code"] == "missing_media"


# -- the key covers every route ------------------------------------------------------------------------

def every_route(app, prefix=""):
    """(path, method) of every route the app serves, mounted apps included, read from the app itself."""
    for route in app.routes:
        included = getattr(route, "original_router", None)  # an included router (the page's /gradio_api)
        if included is not None:
            yield from every_route(included, prefix)
            continue
        path = prefix + (getattr(route, "path", None) or "")
        if getattr(route, "routes", None) is not None:  # a mount (the page at /)
            yield from every_route(route, path.rstrip("/"))
            continue
        for method in sorted(getattr(route, "methods", None) or {"GET"}):
            yield path.replace("{", "").replace("}", "") or "/", method


def test_with_a_key_every_route_of_the_process_answers_401_without_it(bot):
    from app.ui import build

    app = asgi_app(bot, ApiConfig(api_key="sekrit"), ui=build(bot).queue())
    routes = sorted(set(every_route(app)))
    assert len(routes) > 20 and {p for p, _ in routes} >= {"/v1/chat/completions", "/v1/models", "/docs",
                                                          "/openapi.json", "/gradio_api/upload", "/config"}
    client = TestClient(app, follow_redirects=False)
    for path, method in routes:
        if path == "/login":
            continue
        r = client.request(method, path)
        assert r.status_code == 401, (method, path, r.status_code)
    keyed = {"Authorization": "Bearer sekrit"}
    assert client.get("/v1/models", headers=keyed).status_code == 200
    assert client.get("/config", headers=keyed).status_code == 200
    assert client.get("/", headers={"accept": "text/html"}).headers["location"] == "/login"  # a browser: the form
    assert client.post("/login", data={"key": "wrong"}).status_code == 401
    opened = client.post("/login", data={"key": "sekrit"})
    assert opened.status_code == 303 and client.get("/config").status_code == 200  # the cookie opens the page


# -- bounded work, and 400s for what a client can send ---------------------------------------------------

def test_a_disconnected_non_streaming_request_frees_the_model_within_a_second(bot):
    with live_server(create_app(bot, ApiConfig(max_tokens_limit=10_000))) as url:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url + "/v1/chat/completions", timeout=0.5,
                       json={"messages": [{"role": "user", "content": "go on"}], "max_tokens": 10_000})
        gone = time.monotonic()
        deadline = gone + 3
        while bot.get().inner.closed_at is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert bot.get().inner.closed_at is not None and bot.get().inner.closed_at - gone < 1.0


def test_a_generation_stops_at_its_wall_clock_limit(bot):
    client = TestClient(create_app(bot, ApiConfig(max_seconds=0.3, max_tokens_limit=10_000)))
    t0 = time.perf_counter()
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "go on"}], "max_tokens": 5000})
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "length"
    assert time.perf_counter() - t0 < 2


BAD = [  # body, status, code
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": 0.7, "top_p": 0}, 400, "invalid_top_p"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, 400, None),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": -5}, 400, None),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": -1}, 400, "invalid_temperature"),
    ({"messages": [{"role": "system", "content": "be nice"}], "stream": True}, 400, "invalid_input"),
    ({"messages": [{"role": "user", "content": "x" * 40_000}]}, 400, "message_too_long"),
    ({"messages": [{"role": "user", "content": "hi"}] * 65}, 400, "too_many_turns"),
    ({"messages": [{"role": "user", "content": []}]}, 400, "invalid_input"),
    ({"messages": [{"role": "user", "content": "hi"}], "model": "pocket-x"}, 404, "model_not_found"),
]


@pytest.mark.parametrize("body,status,code", BAD)
def test_values_a_client_can_send_get_a_400_before_any_work(bot, body, status, code):
    r = TestClient(create_app(bot)).post("/v1/chat/completions", json=body)
    assert r.status_code == status and "error" in r.json(), r.text
    assert code is None or r.json()["error"]["code"] == code


def test_a_lone_surrogate_is_text_not_a_crash(bot):
    r = TestClient(create_app(bot)).post("/v1/chat/completions", content=b'{"messages": [{"role": "user", '
                                                                          b'"content": "hi \\ud800 there"}]}',
                                         headers={"content-type": "application/json"})
    assert r.status_code == 200


def test_a_chunked_body_over_the_limit_gets_413(bot):
    def chunks():
        for _ in range(30):
            yield b"x" * (1 << 20)

    with live_server(create_app(bot, ApiConfig(max_body_bytes=2_000_000))) as url:
        for path in ("/v1/pocket/run", "/v1/chat/completions"):
            r = httpx.post(url + path, content=chunks(), timeout=30)
            assert r.status_code == 413, (path, r.status_code)


@pytest.mark.weights  # the real tokenizer and context length: the limit is counted in tokens
def test_a_30000_token_conversation_gets_a_400_in_under_a_second(assistant):
    holder = ModelHolder(lambda: assistant)
    holder.wait(5)
    client = TestClient(create_app(holder))
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": "one two three " * 1000} for i in range(11)]
    t0 = time.perf_counter()
    r = client.post("/v1/chat/completions", json={"messages": turns, "max_tokens": 64})
    took = time.perf_counter() - t0
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded", r.text
    assert took < 1.0, took


@pytest.mark.parametrize("argv", [["--max-tokens", "0"], ["--max-tokens", "-5"], ["--temperature", "-1"],
                                  ["--top-p", "0", "--temperature", "0.5"]])
def test_the_command_line_refuses_bad_sampling_settings_before_loading(argv, capsys):
    import launch

    assert launch.main(["ask", "hello", *argv]) == 2
    assert capsys.readouterr().err.startswith("error: ")
