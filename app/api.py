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
import re
import secrets
import tempfile
import threading
import time
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

import numpy as np
import uvicorn
from fastapi import FastAPI, Request  # at module level: FastAPI resolves the string annotations below here
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse

from app.evaluation import Case, run_structured
from encoders.audio import load_audio
from encoders.errors import InputError
from encoders.vision import load_image
from fusion.assistant import Timings, validate_conversation
from fusion.modes import MODES
from fusion.prompt import Audio, Image, clean_text, user_content
from fusion.runtime.generate import SamplingConfig

MODEL_PREFIX = "pocket-"
MODELS = [MODEL_PREFIX + m for m in MODES]
AUDIO_FORMATS = {"wav", "mp3", "flac", "ogg"}


@dataclass
class ApiConfig:
    """The bounds of one request, and who may send one."""
    max_body_bytes: int = 25 * 1024 * 1024  # larger bodies get 413, chunked or not
    max_pending: int = 64  # requests waiting for the model; more get 429 (retry later)
    max_tokens_limit: int = 1024  # max_tokens a request may ask for
    max_message_chars: int = 32_000  # characters of text in one message
    max_turns: int = 64  # messages in one conversation
    max_seconds: float = 300.0  # wall clock of one generation; then it stops with finish_reason "length"
    api_key: str | None = None  # when set, every route of the process needs it (see _guard)
    local_files: Path | None = None  # the one folder image_url may name files in (--allow-local-files DIR)


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
    if len(raw) > config.max_turns:
        raise ApiError(400, f"{len(raw)} messages; the limit is {config.max_turns}: start a new conversation",
                       "messages", "too_many_turns")
    messages = [_parse_message(m, i, config) for i, m in enumerate(raw)]
    mode = model[len(MODEL_PREFIX):]
    try:
        validate_conversation(messages, mode)  # the Assistant's own checks, before any work is queued
    except InputError as err:
        raise ApiError(400, str(err), "messages", err.code) from None
    stop = body.get("stop") or ()
    stop = (stop,) if isinstance(stop, str) else tuple(stop) if isinstance(stop, list) else None
    if stop is None or len(stop) > 4 or not all(isinstance(s, str) for s in stop):
        raise ApiError(400, "'stop' must be a string or a list of up to 4 strings", "stop")
    try:  # SamplingConfig checks the ranges (one check for the command line, the page and the API)
        sampling = SamplingConfig(
            max_new_tokens=_number(body, "max_tokens", 256, int, 1, config.max_tokens_limit, alt="max_completion_tokens"),
            temperature=_number(body, "temperature", 0.0, float), top_p=_number(body, "top_p", 1.0, float), stop=stop,
            seed=body.get("seed") if isinstance(body.get("seed"), int) else None)
    except InputError as err:
        raise ApiError(400, str(err), err.code.removeprefix("invalid_"), err.code) from None
    return ChatRequest(messages, mode, model, sampling, bool(body.get("stream", False)))


def _number(body: dict, key: str, default, kind, lo=None, hi=None, alt: str | None = None):
    value = body.get(key, body.get(alt) if alt else None)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (lo is not None and not lo <= value <= hi):
        raise ApiError(400, f"'{key}' must be a number" + (f" from {lo} to {hi}" if lo is not None else ""), key)
    return kind(value)


def _parse_message(m: Any, i: int, config: ApiConfig) -> dict:
    if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "developer"):
        raise ApiError(400, f"messages[{i}] needs a role of system, user or assistant", f"messages[{i}].role")
    role = "system" if m["role"] == "developer" else m["role"]
    content = m.get("content")
    texts = [content] if isinstance(content, str) else [p.get("text") for p in content
                                                         if isinstance(p, dict) and isinstance(p.get("text"), str)] \
        if isinstance(content, list) else []
    if sum(map(len, texts)) > config.max_message_chars:
        raise ApiError(400, f"messages[{i}] has {sum(map(len, texts))} characters; the limit is "
                            f"{config.max_message_chars}", f"messages[{i}].content", "message_too_long")
    if isinstance(content, str):
        return {"role": role, "content": clean_text(content)}
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
        return {"role": role, "content": clean_text("\n".join(texts))}
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
        return load_image(_local_file(url, where, config))
    except InputError as err:
        raise ApiError(400, f"{where}: {err}", where, "invalid_image") from None


def _local_file(url: str, where: str, config: ApiConfig) -> Path:
    """A file:// URL or a path, only inside the operator's folder (resolved: no "..", no link out of it).
    The refusal is the same whether or not such a file exists."""
    allowed = config.local_files
    refused = ApiError(400, f"{where}: this server reads no local files"
                            f"{' outside the folder its operator allowed' if allowed else ''}; send a data URL",
                       where, "local_file_refused")
    if allowed is None:
        raise refused
    raw = unquote(url[len("file://"):] if url.lower().startswith("file://") else url)
    folder = allowed.resolve()
    path = (folder / raw).resolve()  # an absolute path stays itself; a relative one is taken in the folder
    if not path.is_relative_to(folder) or not path.is_file():
        raise refused
    return path


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

def completion_body(req: ChatRequest, cid: str, text: str, gen: "Generation") -> dict:
    timings = gen.timings
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": req.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": gen.finish_reason}],
            "usage": {"prompt_tokens": timings.prompt_tokens, "completion_tokens": timings.new_tokens,
                      "total_tokens": timings.prompt_tokens + timings.new_tokens},
            "timings": {"first_token_s": timings.first_token_s, "total_s": timings.total_s}}


def chunk_body(req: ChatRequest, cid: str, delta: dict, finish: str | None = None) -> str:
    body = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": req.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(body)}\n\n"


# -- the server ---------------------------------------------------------------------------------

_DONE = object()


DISCONNECT_POLL_S = 0.25  # how often a waiting request checks that its client is still there


class Generation:
    """One request's generation on a worker thread, feeding an asyncio queue; cancellable, and stopped
    at its wall-clock limit (finish_reason "length")."""

    def __init__(self, assistant, req: ChatRequest, loop: asyncio.AbstractEventLoop, max_seconds: float):
        self.queue: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()
        self.timings = Timings()
        self.timed_out = False
        self._deadline = time.monotonic() + max_seconds
        self._loop = loop
        threading.Thread(target=self._run, args=(assistant, req), daemon=True).start()

    @property
    def finish_reason(self) -> str:
        return "length" if self.timings.hit_max_tokens or self.timed_out else "stop"

    def _put(self, item) -> None:
        self._loop.call_soon_threadsafe(self.queue.put_nowait, item)

    async def pieces(self, request: Request):
        """The text pieces as they come; raises the request's ApiError. A client that went away (checked
        while waiting, streaming or not) or leaving early cancels the generation."""
        try:
            while True:
                try:
                    item = await asyncio.wait_for(self.queue.get(), DISCONNECT_POLL_S)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        return
                    continue
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
                self.timed_out = time.monotonic() > self._deadline
                if self.cancelled.is_set() or self.timed_out:
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
    app.state.api_key = config.api_key
    app.middleware("http")(_guard(config))
    app.add_api_route("/login", login, methods=["GET", "POST"], include_in_schema=False)
    app.get("/v1/models")(models)
    app.post("/v1/pocket/run")(_pocket_run(holder, config))
    app.post("/v1/chat/completions")(_chat_completions(holder, config))
    return app


KEY_COOKIE = "pocket_omni_key"
LOGIN_PAGE = """<!doctype html><meta charset="utf-8"><title>pocket-omni: key</title>
<body style="font-family:sans-serif;max-width:28em;margin:4em auto">
<h1>pocket-omni</h1><p>This server asks for its key.</p>{note}
<form method="post" action="/login"><input type="password" name="key" autofocus placeholder="key" size="30">
<button type="submit">Open</button></form></body>"""


def has_key(request: Request, key: str) -> bool:
    """The bearer header (API clients, gradio_client) or the cookie the login page sets (a browser)."""
    sent = request.headers.get("authorization", "").removeprefix("Bearer ")
    return any(secrets.compare_digest(s.encode(), key.encode()) for s in (sent, request.cookies.get(KEY_COOKIE, ""))
               if s)


async def login(request: Request):
    """GET: the key form; POST: a right key sets the cookie and opens the page."""
    key = _api_key(request)
    if request.method == "POST":
        sent = parse_qs((await read_body(request, 4096)).decode(errors="replace")).get("key", [""])[0]
        if key and secrets.compare_digest(sent.encode(), key.encode()):
            done = RedirectResponse("/", status_code=303)
            done.set_cookie(KEY_COOKIE, key, httponly=True, samesite="strict")
            return done
        return HTMLResponse(LOGIN_PAGE.format(note="<p><b>That key is not right.</b></p>"), status_code=401)
    return HTMLResponse(LOGIN_PAGE.format(note=""))


def _api_key(request: Request) -> str | None:
    return request.app.state.api_key


def _guard(config: ApiConfig):
    """Before any route reads anything: the key, on every route the process serves (the API, the page,
    its uploads and events, the docs), and the body size of the API's routes."""
    async def guard(request: Request, call_next):
        if config.api_key and request.url.path != "/login" and not has_key(request, config.api_key):
            if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
                return RedirectResponse("/login", status_code=303)  # a browser: the key form
            return error_response(ApiError(401, "invalid or missing API key", code="invalid_api_key",
                                           kind="authentication_error"))
        if request.url.path.startswith("/v1/"):
            size = request.headers.get("content-length")
            if size and size.isdigit() and int(size) > config.max_body_bytes:
                return error_response(ApiError(413, f"the request is {int(size)} bytes; the limit is "
                                                    f"{config.max_body_bytes}", code="payload_too_large"))
        return await call_next(request)

    return guard


async def models():
    return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "pocket-omni"}
                                       for m in MODELS]}


def _inline_media(body: dict, case: Case, folder: Path) -> None:
    """The case's media from the request itself (base64 in "image" / "audio"), written into `folder`;
    the case's own paths only name a suffix. Nothing is read from a path a client names."""
    for field_name in ("image", "audio"):
        if getattr(case, field_name) is None:
            continue
        data = body.get(field_name)
        if not isinstance(data, str):
            raise ApiError(400, f"the case has an {field_name}: send it inline, base64 in '{field_name}'",
                           field_name, "missing_media")
        suffix = Path(str(getattr(case, field_name))).suffix.lower()
        path = folder / (field_name + (suffix if re.fullmatch(r"\.[a-z0-9]{1,6}", suffix) else ""))
        path.write_bytes(_b64(data, field_name))
        setattr(case, field_name, path.name)


def _pocket_run(holder, config: ApiConfig):
    """POST /v1/pocket/run: structured evaluation tasks (asr transcripts, mushroom, rps) with the local
    task code (app/evaluation.py), media sent inline as base64."""
    async def pocket_run(request: Request):
        try:
            body = json.loads(await read_body(request, config.max_body_bytes))
            case = Case.parse(json.dumps(body["case"]), "case")
            mode = body.get("mode", "e2e")
            if mode not in MODES:
                raise InputError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
            assistant = holder.get()
        except ApiError as err:
            return error_response(err)
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
            return error_response(ApiError(400, f"expected {{case, mode, image, audio}}: {err}", code="invalid_json"))
        except InputError as err:
            return error_response(ApiError(400, str(err), code=err.code))

        def run():
            with tempfile.TemporaryDirectory() as tmp:
                _inline_media(body, case, Path(tmp))
                return run_structured(assistant, case, Path(tmp), mode)

        try:
            return {"outcome": asdict(await asyncio.to_thread(run))}
        except ApiError as err:
            return error_response(err)
        except InputError as err:
            return error_response(ApiError(400, str(err), code=err.code))

    return pocket_run


async def read_body(request: Request, limit: int) -> bytes:
    """The body, read no further than `limit` bytes (a chunked upload has no length to check first)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the request is larger than {limit} bytes", code="payload_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_chat_request(request: Request, config: ApiConfig) -> ChatRequest:
    raw = await read_body(request, config.max_body_bytes)
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
        gen = Generation(assistant, req, asyncio.get_running_loop(), config.max_seconds)
        cid = "chatcmpl-" + secrets.token_hex(12)
        pieces = gen.pieces(request)
        try:  # the first piece (or the request's error) before any status is sent
            first = await anext(pieces, "")
        except ApiError as err:
            pending["n"] -= 1
            return error_response(err)
        if not req.stream:
            try:
                text = first + "".join([p async for p in pieces])
            except ApiError as err:
                return error_response(err)
            finally:
                pending["n"] -= 1
            return completion_body(req, cid, text, gen)

        async def events():
            try:
                yield chunk_body(req, cid, {"role": "assistant", "content": ""})
                if first:
                    yield chunk_body(req, cid, {"content": first})
                async for p in pieces:
                    yield chunk_body(req, cid, {"content": p})
                yield chunk_body(req, cid, {}, gen.finish_reason)
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
