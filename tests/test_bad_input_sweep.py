"""A sweep of bad input through every door (API, command line, page) on a fake assistant: each kind gets
a one-line message and a 4xx (or exit code 2), never a traceback, a 500 or a hang."""

import base64
import io
import json

import cv2
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from app.api import ApiConfig, create_app
from app.chat import ModelHolder
from test_app import EchoAssistant


class Fake(EchoAssistant):
    def transcribe(self, wave):
        return "hello"


@pytest.fixture(scope="module")
def client():
    holder = ModelHolder(Fake)
    holder.wait(5)
    return TestClient(create_app(holder, ApiConfig(max_body_bytes=3_000_000)))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def wav(seconds: float, rate: int = 16000, silent: bool = False) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    buf = io.BytesIO()
    sf.write(buf, np.zeros_like(t) if silent else 0.3 * np.sin(2 * np.pi * 300 * t), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


PNG = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()


def user(*parts):
    return {"messages": [{"role": "user", "content": list(parts)}]}


def image(url):
    return {"type": "image_url", "image_url": {"url": url}}


def audio(data, fmt="wav"):
    return {"type": "input_audio", "input_audio": {"data": data, "format": fmt}}


TEXT = {"type": "text", "text": "what is this?"}
CHAT = [  # (kind, body): every one must get a 4xx with an OpenAI-shaped error
    ("not JSON", "{not json"), ("a JSON list", []), ("a JSON string", "hello"), ("no messages", {}),
    ("empty messages", {"messages": []}), ("messages not a list", {"messages": "hi"}),
    ("a message without a role", {"messages": [{"content": "hi"}]}),
    ("an unknown role", {"messages": [{"role": "robot", "content": "hi"}]}),
    ("content a number", {"messages": [{"role": "user", "content": 5}]}),
    ("a part that is not an object", user("just a string")), ("a video part", user({"type": "video_url"})),
    ("a text part without text", user({"type": "text", "text": 5})), ("an image part without a url", user({"type": "image_url"})),
    ("an image url that is a number", user(image(5))), ("a data URL without base64", user(image("data:image/png,xyz"))),
    ("bad base64 image", user(image("data:image/png;base64,@@@"))),
    ("text sent as an image", user(image("data:image/png;base64," + b64(b"not an image")))),
    ("a truncated PNG", user(image("data:image/png;base64," + b64(PNG[:30])))),
    ("an https image", user(image("https://example.com/cat.png"))), ("a local path", user(image("/etc/passwd"))),
    ("a file URL", user(image("file:///etc/hostname"))), ("audio without data", user({"type": "input_audio"})),
    ("an unknown audio format", user(audio(b64(wav(1)), "aiff"))), ("garbage audio", user(audio(b64(b"noise" * 100)))),
    ("a silent recording", user(audio(b64(wav(1, silent=True))))),
    ("an 11-minute recording", user(audio(b64(wav(660, rate=2000))))),
    ("an empty recording", user(audio(""))), ("stop a number", {**user(TEXT), "stop": 5}),
    ("five stop strings", {**user(TEXT), "stop": ["a", "b", "c", "d", "e"]}),
    ("max_tokens a string", {**user(TEXT), "max_tokens": "ten"}), ("max_tokens a bool", {**user(TEXT), "max_tokens": True}),
    ("max_tokens 0", {**user(TEXT), "max_tokens": 0}), ("max_tokens over the limit", {**user(TEXT), "max_tokens": 10**6}),
    ("temperature 9", {**user(TEXT), "temperature": 9}), ("temperature -1", {**user(TEXT), "temperature": -1}),
    ("top_p 0 with sampling", {**user(TEXT), "top_p": 0, "temperature": 0.7}), ("top_p 2", {**user(TEXT), "top_p": 2}),
    ("only a system message, streamed", {"messages": [{"role": "system", "content": "hi"}], "stream": True}),
    ("the last message the assistant's", {"messages": [{"role": "user", "content": "hi"},
                                                       {"role": "assistant", "content": "hello"}]}),
    ("nine images", user(*[image("data:image/png;base64," + b64(PNG))] * 9)),
    ("an empty string", {"messages": [{"role": "user", "content": ""}]}),
    ("only spaces", {"messages": [{"role": "user", "content": "   "}]}), ("an empty part list", user()),
    ("40,000 characters", {"messages": [{"role": "user", "content": "x" * 40_000}]}),
    ("65 turns", {"messages": [{"role": "user", "content": "hi"}] * 65}),
    ("an unknown model", {**user(TEXT), "model": "gpt-9"}), ("a body over the limit", {"messages": [
        {"role": "user", "content": "x" * 3_100_000}]}),
]
RUN = [  # /v1/pocket/run
    ("not JSON", "{oops"), ("no case", {}), ("a case missing fields", {"case": {"id": "x"}}),
    ("an unknown task", {"case": {"id": "x", "task": "poetry", "answer": "a", "metric": "wer"}}),
    ("asr with audio null", {"case": {"id": "x", "task": "asr", "audio": None, "answer": "a", "metric": "wer"}}),
    ("asr with a path, not inline", {"case": {"id": "x", "task": "asr", "audio": "/etc/x.wav", "answer": "a",
                                              "metric": "wer"}}),
    ("bad base64 media", {"case": {"id": "x", "task": "mushroom", "image": "a.png", "answer": "a", "metric": "safety"},
                          "image": "@@@"}),
    ("text sent as the photo", {"case": {"id": "x", "task": "mushroom", "image": "a.png", "answer": "a",
                                         "metric": "safety"}, "image": b64(b"not a photo")}),
    ("an unknown mode", {"case": {"id": "x", "task": "asr", "audio": "a.wav", "answer": "a", "metric": "wer"},
                         "audio": b64(wav(1)), "mode": "telepathy"}),
]


@pytest.mark.parametrize("path,kind,body", [("/v1/chat/completions", k, b) for k, b in CHAT] +
                         [("/v1/pocket/run", k, b) for k, b in RUN])
def test_bad_api_input_gets_a_4xx_with_one_line(client, path, kind, body):
    raw = body if isinstance(body, str) else json.dumps(body)
    r = client.post(path, content=raw, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, (kind, r.status_code, r.text[:200])
    message = r.json()["error"]["message"]
    assert message and "\n" not in message and "Traceback" not in message, (kind, message)


CLI = [  # (kind, argv builder from a scratch folder)
    ("a missing photo", lambda d: ["ask", "--image", str(d / "missing.jpg"), "hi"]),
    ("a text file as the photo", lambda d: ["ask", "--image", str(_write(d / "a.png", b"text")), "hi"]),
    ("an empty recording", lambda d: ["ask", "--audio", str(_write(d / "e.wav", b""))]),
    ("a garbage recording", lambda d: ["ask", "--audio", str(_write(d / "g.wav", b"noise" * 50))]),
    ("a silent recording", lambda d: ["ask", "--audio", str(_write(d / "s.wav", wav(1, silent=True)))]),
    ("a recording over the limit", lambda d: ["ask", "--max-audio-seconds", "5", "--audio",
                                              str(_write(d / "l.wav", wav(8)))]),
    ("nothing to ask", lambda d: ["ask"]), ("max tokens 0", lambda d: ["ask", "--max-tokens", "0", "hi"]),
    ("temperature -1", lambda d: ["ask", "--temperature", "-1", "hi"]),
    ("top_p 0", lambda d: ["ask", "--top-p", "0", "--temperature", "1", "hi"]),
    ("a missing suite", lambda d: ["eval", str(d / "none.jsonl")]),
]


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("kind,argv", CLI)
def test_bad_command_line_input_gets_one_error_line_and_exit_code_2(kind, argv, tmp_path, capsys, monkeypatch):
    import launch
    from fusion.assistant import Assistant

    monkeypatch.setattr(Assistant, "load_default", classmethod(lambda cls, *a, **k: Fake()))
    assert launch.main(argv(tmp_path)) == 2, kind
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, (kind, err)


def test_an_unknown_mode_on_the_command_line_is_refused_by_its_parser(capsys):
    import launch

    with pytest.raises(SystemExit) as stop:
        launch.main(["ask", "--mode", "telepathy", "hi"])
    assert stop.value.code == 2 and "invalid choice" in capsys.readouterr().err
