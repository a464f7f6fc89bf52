"""Speech -> text with Whisper's own decoder: the cascade's first stage and the ASR yardstick.

Greedy decoding per 30 s window, with CTranslate2's suppression lists (shipped beside the weights)
and timestamps off. Each window is padded to 30 s here: Whisper's decoder was trained on full
windows and drops words on trimmed ones (README has the measurement).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from encoders.audio import AudioTower, is_silent, log_mel_spectrogram, windows

MAX_TOKENS_PER_WINDOW = 224  # Whisper's own cap: half its 448-token context


class WhisperTranscriber:
    def __init__(self, model, tokenizer, suppress: list[int], suppress_begin: list[int], language: str = "en"):
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

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, language: str = "en",
                        dtype: torch.dtype = torch.float32) -> "WhisperTranscriber":
        # lazy: ~3 s at import (triton with it); compare and eval --server import this module, never load the model
        from transformers import WhisperForConditionalGeneration

        path = Path(path)
        model = WhisperForConditionalGeneration.from_pretrained(str(path), dtype=dtype).eval()
        tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        extra = json.loads((path / "ct2_config.json").read_text()) if (path / "ct2_config.json").exists() else {}
        return cls(model, tok, extra.get("suppress_ids", []), extra.get("suppress_ids_begin", [220]), language)

    @torch.inference_mode()
    def transcribe(self, wave: np.ndarray) -> str:
        """16 kHz mono wave of any length -> text ("" for silence)."""
        if is_silent(wave):
            return ""
        texts = [self._decode_window(piece) for piece in windows(wave) if not is_silent(piece)]
        return " ".join(t for t in texts if t)

    def _decode_window(self, piece: np.ndarray) -> str:
        p = next(self.model.parameters())
        mel = log_mel_spectrogram(piece, pad_to_window=True).to(p.device, p.dtype)
        enc = self.tower(mel[None])  # 1, 1500, Da
        ids = torch.tensor([self.prompt], device=p.device)
        cache, out = None, []
        suppress = torch.tensor(self.suppress, device=p.device)
        begin = torch.tensor(self.suppress_begin, device=p.device)
        for step in range(MAX_TOKENS_PER_WINDOW):
            o = self.model(encoder_outputs=(enc,), decoder_input_ids=ids, past_key_values=cache, use_cache=True)
            cache = o.past_key_values
            logits = o.logits[0, -1].float()
            logits[suppress] = -float("inf")
            if step == 0:
                logits[begin] = -float("inf")
            token = int(logits.argmax())
            if token == self.eot:
                break
            out.append(token)
            ids = torch.tensor([[token]], device=p.device)
        return self.tokenizer.decode(out).strip()
