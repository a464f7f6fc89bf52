"""An OpenAI-compatible HTTP API: POST /v1/chat/completions, GET /v1/models (and POST /v1/pocket/run,
/v1/pocket/listen: our own).

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
import contextlib
import json
import os
import re
import secrets
import socket
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request  # at module level: FastAPI resolves the string annotations below here
from fastapi.responses import StreamingResponse

from app.api_access import guard, login
from app.api_request import (MODELS, ApiConfig, ApiError, ChatRequest, _b64, error_response, parse_chat_request,
                             read_body)
from app.evaluation import Case, run_structured
from encoders.errors import InputError
from fusion.assistant import Timings
from fusion.modes import MODES
from fusion.presets import preset

__all__ = ["ApiConfig", "ApiError", "asgi_app", "create_app", "serve", "serving_in_thread"]


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


def create_app(holder, config: ApiConfig | None = None) -> FastAPI:
    """FastAPI app around a ModelHolder (app/chat.py). The UI can be mounted on it at '/'."""
    config = config or ApiConfig()
    app = FastAPI(title="pocket-omni API")
    app.middleware("http")(guard(config))
    app.add_api_route("/login", login(config), methods=["GET", "POST"], include_in_schema=False)
    app.get("/v1/models")(models)
    app.post("/v1/pocket/run")(_pocket_run(holder, config))
    app.post("/v1/chat/completions")(_chat_completions(holder, config))
    app.post("/v1/pocket/listen")(_listen(holder, config))
    return app


def _listen(holder, config: ApiConfig):
    """POST /v1/pocket/listen (experimental; the page does not send it: README, "Listening"): a
    chat-completions body whose last message holds the recording so far, and "recording" (any name for
    it), sent while the person still speaks. Nothing is answered: the server hears the clip and prefills
    the conversation (Assistant.listen), so the answer to the finished recording can come sooner.
    {"listening": true, "heard": the words heard so far} when the recording so far was heard (and its prefill
    queued, when the decoder has an engine and more than the turn's end was said), {"listening": false,
    "heard": ""} when there was nothing to do (the model still loading, silence so far)."""
    async def listen(request: Request):
        try:
            body = await _read_json(request, config)
            req = await asyncio.to_thread(parse_chat_request, body, config)
        except ApiError as err:
            return error_response(err)
        if holder.state() != "ready":
            return {"listening": False, "heard": ""}
        key = str(body.get("recording", ""))  # parse_chat_request checked that the body is an object
        heard = await asyncio.to_thread(holder.get().listen, req.messages, req.mode, key)
        return {"listening": heard is not None, "heard": heard or ""}

    return listen


async def models():
    decoder = preset()  # the one this process serves (--model): each mode's entry names it
    return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "pocket-omni",
                                        "decoder": decoder.name, "decoder_title": decoder.title} for m in MODELS]}


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


async def _read_json(request: Request, config: ApiConfig):
    raw = await read_body(request, config.max_body_bytes)
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ApiError(400, f"the body is not valid JSON: {err}", code="invalid_json") from None


async def _read_chat_request(request: Request, config: ApiConfig) -> ChatRequest:
    body = await _read_json(request, config)
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
