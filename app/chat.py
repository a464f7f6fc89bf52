"""Chat logic for the UI, importable without Gradio: turning uploads into messages, streaming replies.

Each browser session keeps its own `Conversation` (Gradio State); the Assistant is shared and
serialises generation with its own lock, so two tabs never see each other's turns.
"""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from app.safety import guard
from encoders.audio import SAMPLE_RATE
from encoders.errors import InputError
from encoders.speech import speak
from fusion import prompt
from fusion.prompt import Audio, Image
from fusion.runtime.generate import SamplingConfig


@dataclass
class Conversation:
    messages: list[dict] = field(default_factory=list)  # model-side turns, media included
    display: list[dict] = field(default_factory=list)  # what the chat window shows

    def last_answer(self) -> str:
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "assistant"), "")


def user_content(text: str | None, image=None, audio=None) -> list:
    """What the page's components hold (one photo: path or array; one recording: path or (rate,
    samples)) -> message content, by fusion.prompt.user_content."""
    return prompt.user_content(text, [] if image is None else [image], [] if audio is None else [audio])


def describe(content: list) -> str:
    """A one-line summary of a user turn for the chat window."""
    bits = []
    for p in content:
        if isinstance(p, Image):
            bits.append(f"[photo {p.pixels.shape[1]}x{p.pixels.shape[0]}]")
        elif isinstance(p, Audio):
            bits.append(f"[recording {len(p.wave) / SAMPLE_RATE:.1f} s]")
        else:
            bits.append(p)
    return " ".join(bits)


def _with_system(messages: list[dict], system: str | None) -> list[dict]:
    """The persona applies to the whole conversation and is not stored in it (it can change any time)."""
    return ([{"role": "system", "content": system.strip()}] if system and system.strip() else []) + messages


def _stream(assistant, conv: Conversation, mode: str, sampling: SamplingConfig, system: str | None) -> Iterator[str]:
    """Stream an answer to the conversation as it stands; keep the answer, even a stopped one."""
    conv.display.append({"role": "assistant", "content": ""})
    answer = ""
    try:
        for piece in assistant.chat(_with_system(conv.messages, system), mode, sampling):
            answer += piece
            conv.display[-1]["content"] = answer
            yield answer
    finally:  # also on Stop (the generator is closed): the partial answer stays in the conversation
        if answer:
            conv.messages.append({"role": "assistant", "content": answer})


def reply(assistant, conv: Conversation, content: list, mode: str, sampling: SamplingConfig,
          system: str | None = None) -> Iterator[str]:
    """Add the user's turn, stream the answer (yielding the text so far), keep both in the conversation."""
    conv.messages.append({"role": "user", "content": content})
    conv.display.append({"role": "user", "content": describe(content)})
    try:
        yield from _stream(assistant, conv, mode, sampling, system)
    except InputError:
        conv.messages.pop()  # a turn the model could not take is not kept
        del conv.display[-2:]
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
    the safety gate (app/safety.py)."""

    def __init__(self, loader):
        self._loader = loader
        self._assistant = None
        self._error: str | None = None
        self._thread = threading.Thread(target=self._load, daemon=True)
        self._thread.start()

    def _load(self) -> None:
        try:
            self._assistant = guard(self._loader())  # every path a person reaches goes through the gate
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
