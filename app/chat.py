"""Chat logic for the UI, importable without Gradio: turning uploads into messages, streaming replies.

Each browser session keeps its own `Conversation` (Gradio State); the Assistant is shared and
serialises generation with its own lock, so two tabs never see each other's turns.
"""

from __future__ import annotations

import inspect
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import soundfile as sf

from app.safety import guard
from encoders.audio import SAMPLE_RATE
from encoders.errors import InputError
from encoders.speech import speak
from fusion import prompt
from fusion.prompt import Audio, Image
from fusion.runtime.generate import SamplingConfig, Timings


@dataclass
class Conversation:
    messages: list[dict] = field(default_factory=list)  # model-side turns, media included
    display: list[dict] = field(default_factory=list)  # what the chat window shows

    def last_answer(self) -> str:
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "assistant"), "")


@dataclass(frozen=True)
class Unreadable:
    """What the page's photo box holds when the uploaded file is not an image it can decode."""
    name: str

    def error(self) -> InputError:
        return InputError(f"{self.name} is not an image I can read: send a photo (JPEG, PNG, WebP, ...)",
                          "invalid_image")


def user_content(text: str | None, image=None, audio=None) -> list:
    """What the page's components hold (one photo: path or array; one recording: path or (rate,
    samples)) -> message content, by fusion.prompt.user_content."""
    if isinstance(image, Unreadable):
        raise image.error()
    return prompt.user_content(text, [] if image is None else [image], [] if audio is None else [audio])


THUMBNAIL_SIDE = 320  # pixels: what the chat window shows of a photo
MEDIA_DIR = Path(tempfile.gettempdir()) / "pocket-omni-chat"  # the chat window's copies (Gradio serves temp files)
MEDIA_KEEP_S = 24 * 3600  # a copy older than a day goes (a chat window left open that long loses its players)
MEDIA_KEEP_BYTES = 512 * 2**20  # and the oldest go while the copies hold more than this


def prune_media(folder: Path = MEDIA_DIR, now: float | None = None) -> int:
    """Delete the chat window's copies older than MEDIA_KEEP_S, then the oldest while they hold more than
    MEDIA_KEEP_BYTES (a server that runs for weeks must not fill the disk). Returns how many went."""
    now = time.time() if now is None else now
    files = []
    for f in folder.glob("*") if folder.is_dir() else []:
        try:
            st = f.stat()
        except FileNotFoundError:  # another worker pruned it
            continue
        files.append((st.st_mtime, st.st_size, f))
    files.sort()
    total, gone = sum(size for _, size, _ in files), 0
    for mtime, size, f in files:
        if now - mtime <= MEDIA_KEEP_S and total <= MEDIA_KEEP_BYTES:
            break
        f.unlink(missing_ok=True)
        total, gone = total - size, gone + 1
    return gone


def describe(content: list) -> list[dict]:
    """A user turn as the chat window shows it: a thumbnail per photo, a player per recording, the text."""
    MEDIA_DIR.mkdir(exist_ok=True)
    prune_media()
    shown = []
    for p in content:
        if isinstance(p, Image):
            scale = THUMBNAIL_SIDE / max(p.pixels.shape[:2])
            thumb = cv2.resize(p.pixels, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else p.pixels
            path = MEDIA_DIR / f"{uuid.uuid4().hex}.jpg"
            cv2.imwrite(str(path), np.ascontiguousarray(thumb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 85])
            shown.append({"role": "user", "content": {"path": str(path), "mime_type": "image/jpeg",
                                                      "alt_text": f"photo {p.pixels.shape[1]}x{p.pixels.shape[0]}"}})
        elif isinstance(p, Audio):
            path = MEDIA_DIR / f"{uuid.uuid4().hex}.wav"
            sf.write(str(path), p.wave, SAMPLE_RATE)
            shown.append({"role": "user", "content": {"path": str(path), "mime_type": "audio/wav"}})
        else:
            shown.append({"role": "user", "content": p})
    return shown


def _with_system(messages: list[dict], system: str | None) -> list[dict]:
    """The persona applies to the whole conversation and is not stored in it (it can change any time)."""
    return ([{"role": "system", "content": system.strip()}] if system and system.strip() else []) + messages


def _stream(assistant, conv: Conversation, mode: str, sampling: SamplingConfig, system: str | None,
            notes: list[str] | None = None) -> Iterator[str]:
    """Stream an answer to the conversation as it stands; keep the answer, even a stopped one. notes:
    filled with what the assistant heard and saw."""
    conv.display.append({"role": "assistant", "content": ""})
    answer = ""
    timings = Timings(notes=notes if notes is not None else [])
    try:
        for piece in assistant.chat(_with_system(conv.messages, system), mode, sampling, timings):
            answer += piece
            conv.display[-1]["content"] = answer
            yield answer
    finally:  # also on Stop (the generator is closed): the partial answer stays in the conversation
        if answer:
            conv.messages.append({"role": "assistant", "content": answer})


def reply(assistant, conv: Conversation, content: list, mode: str, sampling: SamplingConfig,
          system: str | None = None, notes: list[str] | None = None) -> Iterator[str]:
    """Add the user's turn, stream the answer (yielding the text so far), keep both in the conversation."""
    shown = describe(content)
    conv.messages.append({"role": "user", "content": content})
    conv.display += shown
    try:
        yield from _stream(assistant, conv, mode, sampling, system, notes)
    except InputError:
        conv.messages.pop()  # a turn the model could not take is not kept
        del conv.display[-len(shown) - 1:]
        raise


def regenerate(assistant, conv: Conversation, mode: str, sampling: SamplingConfig,
               system: str | None = None) -> Iterator[str]:
    """Drop the last answer and answer the last user turn again."""
    if not conv.messages or not any(m["role"] == "user" for m in conv.messages):
        raise InputError("nothing to regenerate yet: send a message first")
    if conv.messages[-1]["role"] == "assistant":
        conv.messages.pop()
    if conv.display and conv.display[-1]["role"] == "assistant":
        conv.display.pop()
    yield from _stream(assistant, conv, mode, sampling, system)


def read_aloud(text: str) -> tuple[int, np.ndarray] | None:
    """The answer spoken by espeak-ng, as (rate, samples) for an audio player; None without espeak-ng."""
    if not text.strip() or not shutil.which("espeak-ng"):
        return None
    return SAMPLE_RATE, (speak(text[:1000], "en-us", 160, 50) * 32767).astype(np.int16)


class ModelHolder:
    """Loads the assistant once, in the background, so the page opens at once; hands it out behind
    the safety gate (app/safety.py). A loader that takes `progress` reports each part it loads."""

    def __init__(self, loader):
        self._loader = loader
        self._assistant = None
        self._error: str | None = None
        self.stage = "starting"  # what is loading now
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._load, daemon=True)
        self._thread.start()

    def _progress(self, stage: str) -> None:
        self.stage = stage

    def loading_text(self) -> str:
        return f"{self.stage} ({time.monotonic() - self._started:.0f} s so far)"

    def _load(self) -> None:
        try:
            takes_progress = "progress" in inspect.signature(self._loader).parameters
            loaded = self._loader(progress=self._progress) if takes_progress else self._loader()
            self._assistant = guard(loaded)  # every path a person reaches goes through the gate
        except Exception as err:  # shown in the page; the server keeps running
            self._error = f"{type(err).__name__}: {err}"

    def state(self) -> str:
        """'loading' | 'ready' | 'failed'."""
        return "ready" if self._assistant is not None else "failed" if self._error else "loading"

    @property
    def error(self) -> str | None:
        return self._error

    def get(self):
        if self._assistant is not None:
            return self._assistant
        if self._error:
            raise InputError(f"the model failed to load: {self._error}")
        raise InputError("the model is still loading; try again in a few seconds")

    def wait(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def waiting(self, every: float = 1.0) -> Iterator[str]:
        """While the model loads: a line every `every` seconds saying what is loading, so a message sent
        meanwhile waits for the model (and says so) instead of being refused."""
        while self.state() == "loading":
            yield f"_Your message waits for the model: loading {self.loading_text()}._"
            self._thread.join(every)
