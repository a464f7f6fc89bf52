"""Speech -> text with Whisper's own decoder: the cascade's first stage and the ASR yardstick.

Greedy decoding per 30 s window (encoders/whisper_decode.py, the same tokens as transformers' forward),
with CTranslate2's suppression lists (shipped beside the weights) and timestamps off.

Padding: Whisper's decoder was trained on full 30 s windows; on a window trimmed to the speech it never
emits end-of-text. What it needs is trailing silence, not 30 s of it: each window is padded to the
speech plus 5 s, at least 10 s (PAD_*). On 102 clips (80 synthetic in held-out voices, 22 human) that
measured WER 31.6% / 7.0% vs 33.7% / 7.7% at 30 s, with the encoder's work cut ~2.5x (README).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from encoders.audio import N_SAMPLES, SAMPLE_RATE, AudioTower, is_silent, log_mel_spectrogram, windows
from encoders.errors import Stop
from encoders.whisper_decode import Rows, WhisperGreedy

MAX_TOKENS_PER_WINDOW = 224  # Whisper's own cap: half its 448-token context
PAD_AFTER_SPEECH = 5 * SAMPLE_RATE  # silence after the speech that lets the decoder end the text
PAD_AT_LEAST = 10 * SAMPLE_RATE


def padded_length(samples: int) -> int:
    """How many samples a window of `samples` is padded to before the encoder (at most one window)."""
    return min(N_SAMPLES, max(PAD_AT_LEAST, samples + PAD_AFTER_SPEECH))


class WhisperTranscriber:
    def __init__(self, model, tokenizer, suppress: list[int], suppress_begin: list[int], language: str = "en",
                 rows: Rows | None = None):
        self.model = model  # transformers WhisperForConditionalGeneration
        self.tower = AudioTower(model.model.encoder)  # shared, not a second copy
        self.tokenizer = tokenizer  # tokenizers.Tokenizer
        tid = tokenizer.token_to_id
        self.eot = tid("<|endoftext|>")
        lang = tid(f"<|{language}|>")
        if lang is None:
            raise ValueError(f"Whisper has no language token for {language!r}")
        self.prompt = [tid("<|startoftranscript|>"), lang, tid("<|transcribe|>"), tid("<|notimestamps|>")]
        vocab = model.config.vocab_size
        # Every special token above <|endoftext|> (languages, tasks, timestamps) is never text.
        self.suppress = sorted(set(suppress) | set(range(self.eot + 1, vocab)))
        self.suppress_begin = sorted(set(suppress_begin))
        # `rows`: the decoder's steps through a one-row float16 kernel (encoders/whisper_decode.py)
        self.greedy = WhisperGreedy(model.model.decoder, model.config.decoder_attention_heads, rows=rows)
        model.model.decoder = None  # its weights live on in self.greedy (16-bit copies): ~80 MB less resident

    def to(self, device) -> "WhisperTranscriber":
        self.model.to(device)
        self.greedy.to(device)
        return self

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, language: str = "en", dtype: torch.dtype = torch.float32,
                        rows: Rows | None = None) -> "WhisperTranscriber":
        # lazy: ~3 s at import (triton with it); compare and eval --server import this module, never load the model
        from transformers import WhisperForConditionalGeneration

        path = Path(path)
        model = WhisperForConditionalGeneration.from_pretrained(str(path), dtype=dtype).eval()
        tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        extra = json.loads((path / "ct2_config.json").read_text()) if (path / "ct2_config.json").exists() else {}
        return cls(model, tok, extra.get("suppress_ids", []), extra.get("suppress_ids_begin", [220]), language, rows)

    @torch.inference_mode()
    def transcribe(self, wave: np.ndarray, stop: Stop | None = None) -> str:
        """16 kHz mono wave of any length -> text ("" for silence). `stop`: see encoders.errors.Interrupted."""
        if is_silent(wave):
            return ""
        texts = [self._decode_window(piece, stop) for piece in windows(wave) if not is_silent(piece)]
        return " ".join(t for t in texts if t)

    def _decode_window(self, piece: np.ndarray, stop: Stop | None) -> str:
        p = next(self.model.parameters())
        wave = np.pad(np.asarray(piece, dtype=np.float32), (0, padded_length(len(piece)) - len(piece)))
        mel = log_mel_spectrogram(wave).to(p.device, p.dtype)
        frames = self.tower(mel[None], stop)[0]  # Ta, Da
        tokens = self.greedy(frames, self.prompt, self.eot, torch.tensor(self.suppress, device=p.device),
                             torch.tensor(self.suppress_begin, device=p.device), MAX_TOKENS_PER_WINDOW, stop)
        return self.tokenizer.decode(tokens).strip()
