"""The decoders the assistant can run, each a named preset: its packaged weights, its placeholder
tokens for media, and the projectors trained for it (a light module: the command line reads it first).

    --model qwen-1.5b | qwen-0.5b | smollm-135m       (or POCKET_OMNI_MODEL; launch.py sets it)

The preset is the one field that says which decoder runs; nothing is inferred from file names.
Placeholders are special tokens of the decoder's vocabulary that it never writes in an answer:
SmolLM2's Jupyter markers, Qwen2.5's reserved vision pads (the coder models never emit them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from fusion.modes import ROUTES, Route
from fusion.weights.fetch import SplitFile
from fusion.weights.qwen import QWEN_05B_GGUF, QWEN_15B_GGUF

MODEL_ENV = "POCKET_OMNI_MODEL"
PresetName = Literal["qwen-1.5b", "qwen-0.5b", "smollm-135m"]


@dataclass(frozen=True)
class Preset:
    name: str
    title: str  # what the page and the API show
    gguf: SplitFile | None  # the GGUF file kept quantized (QuantEngine); None: SmolLM2, converted for transformers
    image_token: str
    audio_token: str
    projectors: str  # file in assets/projectors trained for this decoder (`launch.py train` writes it; absent: none yet)
    auto: Route = ROUTES["auto"]  # what "auto" does with this decoder: per medium, the path measured better

    @property
    def weights(self) -> Literal["gguf", "hf"]:
        return "gguf" if self.gguf is not None else "hf"

    @property
    def download_gb(self) -> float:
        """What the first run fetches for the decoder (SmolLM2's Q4_1 file: 0.09 GB)."""
        return self.gguf.size / 1e9 if self.gguf is not None else 0.09


# Photos in auto, measured per preset (greedy, 48 tokens, one run each; the photo's sentences of
# fusion/photo_text.py as embeddings vs as text): Qwen2.5-1.5B photos.jsonl 79% vs 79%, "What is in this
# picture?" 14/19 vs 15/19, photo_followups.jsonl 69% vs 72%; SmolLM2-135M 66% vs 79%, 11/19 vs 15/19,
# 32% vs 45%. So every preset's auto sends photos as text (ROUTES["auto"]); speech is transcribed: every
# preset's CTC readout reads human speech far worse than Whisper (WER: Qwen 1.5B 49%, 0.5B 48%, Whisper
# 6.5%; SmolLM2's too: model card).


PRESETS: dict[str, Preset] = {
    "qwen-1.5b": Preset("qwen-1.5b", "Qwen2.5-Coder-1.5B-Instruct Q4_K_M", QWEN_15B_GGUF, "<|image_pad|>",
                        "<|video_pad|>", "qwen-1.5b.safetensors"),
    "qwen-0.5b": Preset("qwen-0.5b", "Qwen2.5-Coder-0.5B-Instruct Q4_K_M", QWEN_05B_GGUF, "<|image_pad|>",
                        "<|video_pad|>", "qwen-0.5b.safetensors"),
    "smollm-135m": Preset("smollm-135m", "SmolLM2-135M-Instruct", None, "<jupyter_code>", "<jupyter_output>",
                          "pocket.safetensors"),
}
DEFAULT_PRESET = "qwen-1.5b"
TINY_PRESET = "smollm-135m"  # the fast tests' decoder


def preset(name: str | None = None) -> Preset:
    """The named preset, else the one POCKET_OMNI_MODEL names, else the default."""
    name = name or os.environ.get(MODEL_ENV) or DEFAULT_PRESET
    if name not in PRESETS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
