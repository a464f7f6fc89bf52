"""Token generation over a KV cache, streamed: prefill, decode_one_token, sample.

The decoder is any transformers causal LM; its cache object holds past keys and values so each
new token costs one position, not the whole prompt again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch


@dataclass
class SamplingConfig:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


def sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None = None) -> int:
    """(V,) logits -> a token id: argmax at temperature 0, else nucleus sampling."""
    if temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        # keep the smallest prefix whose mass reaches top_p (always at least the top token)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p
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


def stream_text(tokenizer, tokens: Iterator[int], stop: tuple[str, ...] = ()) -> Iterator[str]:
    """Token ids -> text pieces as they become printable; ends early at a stop string (not shown)."""
    ids: list[int] = []
    shown = ""
    hold = max((len(s) for s in stop), default=0)  # keep back what could be the start of a stop string
    for token in tokens:
        ids.append(token)
        text = tokenizer.decode(ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
            continue
        cut = min((text.find(s) for s in stop if s and s in text), default=-1)
        if cut >= 0:
            if cut > len(shown):
                yield text[len(shown):cut]
            return
        ready = len(text) - hold
        if ready > len(shown):
            yield text[len(shown):ready]
            shown = text[:ready]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    if len(text) > len(shown):
        yield text[len(shown):]
