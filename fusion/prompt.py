"""Conversations -> token ids with each image and clip expanded to exactly its number of placeholders.

A message is {"role": "system"|"user"|"assistant", "content": str | list[str | Image | Audio]}.
Media parts sit where they appear in the content. The decoder's own chat template renders the
conversation with a sentinel in place of each media part; the sentinels are then replaced by runs
of the modality's placeholder id, as long as the projected feature sequence. The model later
scatters the features into exactly those positions and raises when the counts differ.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from encoders.audio import MAX_SECONDS, load_audio, to_mono_16k
from encoders.errors import InputError
from encoders.vision import load_image, to_rgb

Role = str  # "system" | "user" | "assistant"


@dataclass
class Image:
    pixels: np.ndarray  # RGB uint8 (H, W, 3)
    name: str = "image"


@dataclass
class Audio:
    wave: np.ndarray  # mono float32 at 16 kHz
    name: str = "audio"


Part = str | Image | Audio
MAX_IMAGES = 8  # per conversation: each costs tokens and a tower pass (checked by validate_conversation)
REPEAT_PROMPT = "Repeat exactly what was said."  # the dictation task: training data and the asr suite


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """Text as a tokenizer can take it: a lone UTF-16 surrogate (which JSON and the shell can carry, and
    UTF-8 cannot) becomes U+FFFD."""
    return _LONE_SURROGATE.sub("\ufffd", text)


def user_content(text: str | None = None, images: Sequence = (), clips: Sequence = (),
                 max_seconds: float = MAX_SECONDS) -> list[Part]:
    """A user turn from what was sent, in the one order every entry point uses (the command line, the
    page, the API, the evaluations): images, then recordings, then the text.
    images: Image, RGB/grey/BGRA arrays, file paths or encoded bytes; clips: Audio, (rate, samples) as a
    microphone gives them, or file paths. InputError for unreadable media or nothing at all."""
    content: list[Part] = []
    for i, image in enumerate(images):
        if isinstance(image, Image):
            content.append(image)
        elif isinstance(image, (str, os.PathLike)):
            content.append(Image(load_image(image), Path(image).name))
        else:
            pixels = load_image(image) if isinstance(image, bytes) else to_rgb(np.asarray(image))
            content.append(Image(pixels, "the photo" if len(images) == 1 else f"image {i + 1}"))
    for i, clip in enumerate(clips):
        name = "the recording" if len(clips) == 1 else f"recording {i + 1}"
        if isinstance(clip, Audio):
            content.append(clip)
        elif isinstance(clip, (str, os.PathLike)):
            content.append(Audio(load_audio(clip, max_seconds), Path(clip).name))
        else:
            rate, samples = clip
            content.append(Audio(to_mono_16k(np.asarray(samples), rate, max_seconds, name=name), name))
    if text and text.strip():
        content.append(clean_text(text.strip()))
    if not content:
        raise InputError("type a message, or add a photo or a recording")
    return content

_SENTINEL = "\u2063MEDIA{}\u2063"  # invisible separator: never typed, never merged by BPE with text
_SENTINEL_RE = re.compile("\u2063MEDIA(\\d+)\u2063")


def media_parts(messages: list[dict]) -> list[Image | Audio]:
    """Every image and clip in the conversation, in the order they appear."""
    return [p for m in messages if not isinstance(m["content"], str) for p in m["content"]
            if isinstance(p, (Image, Audio))]


@dataclass
class PromptIds:
    ids: list[int]


def build_prompt_ids(tokenizer, messages: list[dict], media_lengths: list[int], placeholder_ids: dict[type, int],
                     add_generation_prompt: bool = True) -> PromptIds:
    """Render with the chat template and expand media part i to media_lengths[i] placeholder ids."""
    media: list[Image | Audio] = []
    rendered = []
    for m in messages:
        content = m["content"]
        if isinstance(content, str):
            rendered.append({"role": m["role"], "content": content})
            continue
        text = []
        for part in content:
            if isinstance(part, str):
                text.append(part)
            else:
                text.append(_SENTINEL.format(len(media)))
                media.append(part)
        rendered.append({"role": m["role"], "content": "\n".join(text)})
    if len(media) != len(media_lengths):
        raise ValueError(f"{len(media)} media parts but {len(media_lengths)} lengths")
    prompt = tokenizer.apply_chat_template(rendered, tokenize=False, add_generation_prompt=add_generation_prompt)
    ids: list[int] = []
    pos = 0
    for match in _SENTINEL_RE.finditer(prompt):
        ids += tokenizer.encode(prompt[pos:match.start()], add_special_tokens=False)
        i = int(match.group(1))
        ids += [placeholder_ids[type(media[i])]] * media_lengths[i]
        pos = match.end()
    ids += tokenizer.encode(prompt[pos:], add_special_tokens=False)
    return PromptIds(ids)
