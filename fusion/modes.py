"""The answer modes, defined once for the command line, the page, the API and the evaluations (a light
module: the command line reads it before anything heavy is imported).

Each mode is a route per medium: how the Assistant hands speech and images to the decoder.
- "e2e": images and clips go through the towers and projectors straight into the decoder;
- "cascade": Whisper's own decoder writes the speech down and a photo becomes the sentences about what
  the encoders found in it (fusion/photo_text.py); the decoder then reads plain text. The yardstick
  for e2e, and useful alone;
- "auto": each medium by the route that measures better on the held-out sets today, per decoder
  (fusion/presets.py): speech transcribed, photos as their sentences in text (assets/projectors/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

Mode = Literal["e2e", "cascade", "auto"]
MODES: tuple[Mode, ...] = get_args(Mode)
DEFAULT_MODE: Mode = "auto"


@dataclass(frozen=True)
class Route:
    """How a mode hands each medium to the decoder."""
    speech: Literal["embeddings", "transcript"]  # projected audio tokens, or Whisper's transcript as text
    images: Literal["embeddings", "labels"]  # projected image tokens, or the photo's sentences as text


ROUTES: dict[Mode, Route] = {"e2e": Route("embeddings", "embeddings"), "cascade": Route("transcript", "labels"),
                             "auto": Route("transcript", "labels")}
