"""An OpenAI-compatible HTTP API: POST /v1/chat/completions, GET /v1/models.

The `model` field picks the path: "pocket-e2e" (media embeddings into the decoder) or
"pocket-cascade" (Whisper transcript and ImageNet labels as text). Content parts: "text",
"image_url" (data URLs; file:// URLs and plain paths when local files are allowed) and
"input_audio" (base64 wav/mp3/flac/ogg). Errors are OpenAI-shaped JSON.

Requests queue for the one model: each generation runs in its own worker thread that pushes text
into a per-request queue, so a slow or vanished reader never holds the model; the Assistant's
lock serialises the model itself. A client that disconnects cancels its generation.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import os
import secrets
import tempfile
import threading
import time
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI, Request  # at module level: FastAPI resolves the string annotations below here
from fastapi.responses import JSONResponse, StreamingResponse

from app.evaluation import Case, run_structured
from encoders.audio import load_audio
from encoders.errors import InputError
from encoders.vision import load_image
from fusion.assistant import Timings, validate_conversation
from fusion.modes import MODES
from fusion.prompt import Audio, Image, user_content
from fusion.runtime.generate import SamplingConfig

MODEL_PREFIX = "pocket-"
MODELS = [MODEL_PREFIX + m for m in MODES]
AUDIO_FORMATS = {"wav", "mp3", "flac", "ogg"}


@dataclass
class ApiConfig:
    max_body_bytes: int = 25 * 1024 * 1024
    max_pending: int = 64  # requests waiting for the model; more get 429 (retry later)
    max_tokens_limit: int = 1024
    api_key: str | None = None
    allow_local_files: bool = True  # image_url may name a file on this machine (file:// or a path)


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


# -- request -> conversation --------------------------------------------------------------------

@dataclass
class ChatRequest:
    messages: list[dict]
    mode: str
    model: str
    sampling: SamplingConfig
    stream: bool


def parse_chat_request(body: Any, config: ApiConfig) -> ChatRequest:
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    model = body.get("model", MODELS[0])
    if model not in MODELS:
        raise ApiError(404, f"the model {model!r} does not exist; available: {', '.join(MODELS)}", "model",
                       "model_not_found")
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "'messages' must be a non-empty list", "messages")
    messages = [_parse_message(m, i, config) for i, m in enumerate(raw)]
    mode = model[len(MODEL_PREFIX):]
    try:
        validate_conversation(messages, mode)  # the Assistant's own checks, before any work is queued
    except InputError as err:
        raise ApiError(400, str(err), "messages", err.code) from None
    stop = body.get("stop") or ()
    stop = (stop,) if isinstance(stop, str) else tuple(stop)
    if len(stop) > 4 or not all(isinstance(s, str) for s in stop):
        raise ApiError(400, "'stop' must be a string or a list of up to 4 strings", "stop")
    sampling = SamplingConfig(
        max_new_tokens=_number(body, "max_tokens", 256, int, 1, config.max_tokens_limit, alt="max_completion_tokens"),
        temperature=_number(body, "temperature", 0.0, float, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, float, 0.0, 1.0), stop=stop,
        seed=body.get("seed") if isinstance(body.get("seed"), int) else None)
    return ChatRequest(messages, mode, model, sampling, bool(body.get("stream", False)))


def _number(body: dict, key: str, default, kind, lo, hi, alt: str | None = None):
    value = body.get(key, body.get(alt) if alt else None)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ApiError(400, f"'{key}' must be a number from {lo} to {hi}", key)
    return kind(value)


def _parse_message(m: Any, i: int, config: ApiConfig) -> dict:
    if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "developer"):
        raise ApiError(400, f"messages[{i}] needs a role of system, user or assistant", f"messages[{i}].role")
    role = "system" if m["role"] == "developer" else m["role"]
    content = m.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise ApiError(400, f"messages[{i}].content must be a string or a list of parts", f"messages[{i}].content")
    texts, images, clips = [], [], []
    for j, part in enumerate(content):
        where = f"messages[{i}].content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            url = part.get("image_url", {})
            url = url.get("url") if isinstance(url, dict) else url
            images.append(Image(_image_from_url(url, where, config), f"image {len(images) + 1}"))
        elif kind == "input_audio":
            clips.append(Audio(_audio_from_part(part.get("input_audio"), where), f"audio {len(clips) + 1}"))
        else:
            raise ApiError(400, f"{where}: unsupported content part type {kind!r} "
                                f"(use text, image_url or input_audio)", where, "unsupported_content_type")
    if role != "user":
        return {"role": role, "content": "\n".join(texts)}
    try:  # one order for every entry point: images, recordings, then the text
        return {"role": role, "content": user_content("\n".join(texts), images, clips)}
    except InputError as err:
        raise ApiError(400, f"messages[{i}]: {err}", f"messages[{i}].content", err.code) from None


def _b64(data: str, where: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise ApiError(400, f"{where}: the data is not valid base64", where, "invalid_base64") from None


def _image_from_url(url: Any, where: str, config: ApiConfig) -> np.ndarray:
    if not isinstance(url, str) or not url:
        raise ApiError(400, f"{where}: image_url.url must be a string", where)
    try:
        if url.startswith("data:"):
            header, _, data = url.partition(",")
            if ";base64" not in header:
                raise ApiError(400, f"{where}: only base64 data URLs are supported", where)
            return load_image(_b64(data, where))
        if url.startswith(("http://", "https://")):
            raise ApiError(400, f"{where}: this server is offline and fetches no URLs; send a data URL", where,
                           "url_not_supported")
        if not config.allow_local_files:
            raise ApiError(400, f"{where}: local files are not allowed on this server; send a data URL", where)
        return load_image(url.removeprefix("file://"))
    except InputError as err:
        raise ApiError(400, f"{where}: {err}", where, "invalid_image") from None


def _audio_from_part(part: Any, where: str) -> np.ndarray:
    if not isinstance(part, dict) or not isinstance(part.get("data"), str):
        raise ApiError(400, f"{where}: input_audio needs 'data' (base64) and 'format'", where)
    fmt = str(part.get("format", "wav")).lower()
    if fmt not in AUDIO_FORMATS:
        raise ApiError(400, f"{where}: unsupported audio format {fmt!r} (use {', '.join(sorted(AUDIO_FORMATS))})",
                       where, "unsupported_audio")
    raw = _b64(part["data"], where)
    with tempfile.NamedTemporaryFile(suffix="." + fmt) as f:
        f.write(raw)
        f.flush()
        try:
            return load_audio(f.name)
        except InputError as err:
            raise ApiError(400, f"{where}: {str(err).replace(Path(f.name).name, 'the audio')}", where,
                           "unsupported_audio") from None


# -- responses ------------------------------------------------------------------------------------

def completion_body(req: ChatRequest, cid: str, text: str, timings: Timings) -> dict:
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": req.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "length" if timings.hit_max_tokens else "stop"}],
            "usage": {"prompt_tokens": timings.prompt_tokens, "completion_tokens": timings.new_tokens,
                      "total_tokens": timings.prompt_tokens + timings.new_tokens},
            "timings": {"first_token_s": timings.first_token_s, "total_s": timings.total_s}}


def chunk_body(req: ChatRequest, cid: str, delta: dict, finish: str | None = None) -> str:
    body = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": req.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(body)}\n\n"


# -- the server ---------------------------------------------------------------------------------

_DONE = object()


class Generation:
    """One request's generation on a worker thread, feeding an asyncio queue; cancellable."""

    def __init__(self, assistant, req: ChatRequest, loop: asyncio.AbstractEventLoop):
        self.queue: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()
        self.timings = Timings()
        self._loop = loop
        threading.Thread(target=self._run, args=(assistant, req), daemon=True).start()

    def _put(self, item) -> None:
        self._loop.call_soon_threadsafe(self.queue.put_nowait, item)

    async def pieces(self):
        """The text pieces as they come; raises the request's ApiError. Leaving early (a client that went
        away) cancels the generation."""
        try:
            while True:
                item = await self.queue.get()
                if item is _DONE:
                    return
                if isinstance(item, ApiError):
                    raise item
                yield item
        finally:
            self.cancelled.set()  # no-op when finished; stops the worker when the client left

    def _run(self, assistant, req: ChatRequest) -> None:
        try:
            pieces = assistant.chat(req.messages, req.mode, req.sampling, self.timings)
            for piece in pieces:
                if self.cancelled.is_set():
                    pieces.close()  # releases the model for the next request
                    break
                self._put(piece)
            self._put(_DONE)
        except InputError as err:
            self._put(ApiError(400, str(err), "messages", err.code))
        except Exception as err:  # one bad request must not take the server down
            self._put(ApiError(500, f"internal error: {type(err).__name__}: {err}", kind="server_error"))


def error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


def create_app(holder, config: ApiConfig | None = None) -> FastAPI:
    """FastAPI app around a ModelHolder (app/chat.py). The UI can be mounted on it at '/'."""
    config = config or ApiConfig()
    app = FastAPI(title="pocket-omni API")
    app.middleware("http")(_guard(config))
    app.get("/v1/models")(models)
    app.post("/v1/pocket/run")(_pocket_run(holder))
    app.post("/v1/chat/completions")(_chat_completions(holder, config))
    return app


def _guard(config: ApiConfig):
    """The key and the body size, checked before a /v1 route reads anything."""
    async def guard(request: Request, call_next):
        if request.url.path.startswith("/v1/"):
            if config.api_key and request.headers.get("authorization", "") != f"Bearer {config.api_key}":
                return error_response(ApiError(401, "invalid or missing API key", code="invalid_api_key",
                                               kind="authentication_error"))
            size = request.headers.get("content-length")
            if size and size.isdigit() and int(size) > config.max_body_bytes:
                return error_response(ApiError(413, f"the request is {int(size)} bytes; the limit is "
                                                    f"{config.max_body_bytes}", code="payload_too_large"))
        return await call_next(request)

    return guard


async def models():
    return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "pocket-omni"}
                                       for m in MODELS]}


def _pocket_run(holder):
    """POST /v1/pocket/run: structured evaluation tasks (asr transcripts, mushroom, rps) with the local
    task code (app/evaluation.py), media sent inline as base64."""
    async def pocket_run(request: Request):
        try:
            body = json.loads(await request.body())
            case = Case.parse(json.dumps(body["case"]), "case")
            assistant = holder.get()
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            return error_response(ApiError(400, f"expected {{case, mode, image, audio}}: {err}", code="invalid_json"))
        except InputError as err:
            return error_response(ApiError(400, str(err), code=err.code))

        def run():
            with tempfile.TemporaryDirectory() as tmp:
                for field_name in ("image", "audio"):
                    rel = getattr(case, field_name)
                    if rel and body.get(field_name):
                        name = Path(rel).name
                        (Path(tmp) / name).write_bytes(_b64(body[field_name], field_name))
                        setattr(case, field_name, name)
                return run_structured(assistant, case, Path(tmp), body.get("mode", "e2e"))

        try:
            return {"outcome": asdict(await asyncio.to_thread(run))}
        except ApiError as err:
            return error_response(err)
        except InputError as err:
            return error_response(ApiError(400, str(err), code=err.code))

    return pocket_run


async def _read_chat_request(request: Request, config: ApiConfig) -> ChatRequest:
    raw = await request.body()
    if len(raw) > config.max_body_bytes:
        raise ApiError(413, f"the request is larger than {config.max_body_bytes} bytes", code="payload_too_large")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ApiError(400, f"the body is not valid JSON: {err}", code="invalid_json") from None
    return await asyncio.to_thread(parse_chat_request, body, config)  # decoding media is CPU work


def _chat_completions(holder, config: ApiConfig):
    """POST /v1/chat/completions: a generation per request on its own worker (Generation), streamed
    as server-sent events or gathered into one body."""
    pending = {"n": 0}

    async def chat_completions(request: Request):
        try:
            req = await _read_chat_request(request, config)
            assistant = holder.get()
        except ApiError as err:
            return error_response(err)
        except InputError as err:  # model still loading
            return error_response(ApiError(503, str(err), code="model_loading", kind="server_error"))
        if pending["n"] >= config.max_pending:
            return error_response(ApiError(429, "too many requests are waiting; retry shortly", code="queue_full",
                                           kind="rate_limit_error"))
        pending["n"] += 1
        gen = Generation(assistant, req, asyncio.get_running_loop())
        cid = "chatcmpl-" + secrets.token_hex(12)
        if not req.stream:
            try:
                text = "".join([p async for p in gen.pieces()])
            except ApiError as err:
                return error_response(err)
            finally:
                pending["n"] -= 1
            return completion_body(req, cid, text, gen.timings)

        async def events():
            try:
                yield chunk_body(req, cid, {"role": "assistant", "content": ""})
                async for p in gen.pieces():
                    yield chunk_body(req, cid, {"content": p})
                yield chunk_body(req, cid, {}, "length" if gen.timings.hit_max_tokens else "stop")
            except ApiError as err:
                yield f"data: {json.dumps(err.body())}\n\n"
            finally:
                pending["n"] -= 1
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return chat_completions


def asgi_app(holder, config: ApiConfig | None = None, ui=None):
    """The API, with the Gradio page mounted at / when ui is given: what `launch.py` serves."""
    app = create_app(holder, config)
    if ui is not None:
        import gradio as gr  # lazy: ~6 s of import, and `launch.py serve` (API alone) has no page

        app = gr.mount_gradio_app(app, ui, path="/")
    return app


def serve(holder, host: str = "127.0.0.1", port: int = 8000, config: ApiConfig | None = None, ui=None) -> None:
    uvicorn.run(asgi_app(holder, config, ui), host=host, port=port,
                log_level=os.environ.get("POCKET_OMNI_LOG", "warning"))


@contextlib.contextmanager
def serving_in_thread(app):
    """Serve an ASGI app on a free loopback port in a background thread; yields its base URL.
    For tests and benchmarks that need a real server in the same process."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(5)
