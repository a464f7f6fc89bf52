"""The API's requests: what a client may send, parsed into a conversation and bounded (ApiConfig),
with OpenAI-shaped errors (ApiError). Media come only inside the request (data URLs, base64), or from
the one folder an operator allows."""

from __future__ import annotations

import base64
import binascii
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse

from encoders.audio import load_audio
from encoders.errors import InputError
from encoders.vision import load_image
from fusion.assistant import validate_conversation
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


def error_response(err: "ApiError") -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


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
    stop = body.get("stop") or []
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


async def read_body(request: Request, limit: int) -> bytes:
    """The body, read no further than `limit` bytes (a chunked upload has no length to check first)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the request is larger than {limit} bytes", code="payload_too_large")
        chunks.append(chunk)
    return b"".join(chunks)
