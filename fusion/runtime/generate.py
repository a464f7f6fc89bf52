"""Token generation over a KV cache, streamed: prefill, decode_one_token, sample.

The decoder is any transformers causal LM; its cache object holds past keys and values so each
new token costs one position, not the whole prompt again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator

import torch

from encoders.errors import InputError


MAX_TEMPERATURE = 2.0


@dataclass
class SamplingConfig:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # stop when the last `repeat_ngram` tokens have come twice before (an answer looping until the
    # token cap: "I'm happy to say that ..." x10); 0: off. Measured on the suites: README, "Repetition"
    repeat_ngram: int = 10

    def __post_init__(self):
        """The one check of sampling settings, whoever sets them (the command line, the page, the API)."""
        n = self.max_new_tokens
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InputError(f"max tokens must be a whole number of at least 1 (got {n!r})", "invalid_max_tokens")
        if not 0 <= self.temperature <= MAX_TEMPERATURE:
            raise InputError(f"temperature must be from 0 to {MAX_TEMPERATURE} (got {self.temperature})",
                             "invalid_temperature")
        if not 0 < self.top_p <= 1:
            raise InputError(f"top_p must be above 0 and at most 1 (got {self.top_p})", "invalid_top_p")


def sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None = None) -> int:
    """(V,) logits -> a token id: argmax at temperature 0, else nucleus sampling."""
    if temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        # keep the smallest prefix whose mass reaches top_p (always at least the top token)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p
        keep[0] = True
        probs = torch.zeros_like(probs).scatter_(0, order[keep], sorted_p[keep])
    return int(torch.multinomial(probs, 1, generator=generator))


def prefill(decoder, embeds: torch.Tensor):
    """(1, L, D) prompt embeddings -> (last-position logits (V,), cache)."""
    out = decoder(inputs_embeds=embeds, use_cache=True)
    return out.logits[0, -1], out.past_key_values


def decode_one_token(decoder, token: int, cache):
    """One new token through the cached decoder -> (logits (V,), cache)."""
    ids = torch.tensor([[token]], device=decoder.device)
    out = decoder(input_ids=ids, past_key_values=cache, use_cache=True)
    return out.logits[0, -1], out.past_key_values


@torch.inference_mode()
def generate_tokens(decoder, embeds: torch.Tensor, eos_ids: set[int], config: SamplingConfig,
                    engine=None) -> Iterator[int]:
    """Yield new token ids one at a time until EOS or max_new_tokens.

    engine: a fusion.runtime.engine.StaticEngine over the same decoder (the fast path); used when the whole
    conversation fits its cache, else the transformers forward with its dynamic cache."""
    generator = None
    if config.seed is not None:
        generator = torch.Generator(device="cpu").manual_seed(config.seed)
    if engine is not None and embeds.shape[1] + config.max_new_tokens <= engine.max_len:
        logits = engine.prefill(embeds)
        step = engine.decode
    else:
        logits, cache = prefill(decoder, embeds)

        def step(token):
            nonlocal cache
            logits, cache = decode_one_token(decoder, token, cache)
            return logits
    for i in range(config.max_new_tokens):
        token = sample(logits.cpu(), config.temperature, config.top_p, generator)
        if token in eos_ids:
            return
        yield token
        if i + 1 < config.max_new_tokens:  # the last token's logits would never be used
            logits = step(token)


@dataclass
class Timings:
    """Filled in as a turn is answered: what a benchmark or evaluation reports."""
    encode_s: float = 0.0
    first_token_s: float | None = None
    total_s: float = 0.0
    prompt_tokens: int = 0
    new_tokens: int = 0
    hit_max_tokens: bool = False  # stopped by max_new_tokens rather than end of turn or a stop string
    notes: list[str] = field(default_factory=list)


def stream_text(tokenizer, tokens: Iterator[int], stop: tuple[str, ...] = (), timings: Timings | None = None,
                t0: float | None = None, repeat_ngram: int = 0) -> Iterator[str]:
    """Token ids -> text pieces as they become printable; ends early at a stop string (not shown) or
    when the text starts going round in circles (the last `repeat_ngram` tokens seen twice before).
    timings: counts the tokens and notes when the first piece left (seconds since t0)."""
    ids: list[int] = []
    shown = ""
    hold = max((len(s) for s in stop), default=0)  # keep back what could be the start of a stop string
    t0 = time.perf_counter() if t0 is None else t0

    def ready(piece: str) -> str:
        if timings is not None and timings.first_token_s is None:
            timings.first_token_s = time.perf_counter() - t0
        return piece

    seen: dict[tuple[int, ...], int] = {}
    try:
        for token in tokens:
            if timings is not None:
                timings.new_tokens += 1
            ids.append(token)
            if repeat_ngram and len(ids) >= repeat_ngram:
                gram = tuple(ids[-repeat_ngram:])
                seen[gram] = seen.get(gram, 0) + 1
                if seen[gram] >= 3:  # the third time round: the answer is looping
                    if timings is not None:
                        timings.notes.append("stopped: the answer began repeating itself")
                    break
            text = tokenizer.decode(ids, skip_special_tokens=True)
            if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
                continue
            cut = min((text.find(s) for s in stop if s and s in text), default=-1)
            if cut >= 0:
                if cut > len(shown):
                    yield ready(text[len(shown):cut])
                return
            end = len(text) - hold
            if end > len(shown):
                yield ready(text[len(shown):end])
                shown = text[:end]
        text = tokenizer.decode(ids, skip_special_tokens=True)
        if len(text) > len(shown):
            yield ready(text[len(shown):])
    finally:
        close = getattr(tokens, "close", None)
        if close is not None:
            close()  # a stop string or a loop ended the answer early: the decoder stops too
