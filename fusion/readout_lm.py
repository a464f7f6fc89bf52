"""A token trigram language model and the CTC prefix beam search that uses it: how the audio readout
(fusion/projectors.py, CTCReadout) chooses among the words it half-hears.

Greedy CTC takes each frame's best class on its own; "What is the capital of Portugal?" read by an
unheard voice comes out "Tell me may a capital city of Portugal?". A beam search over the frames' top
classes, scored by the acoustic log-probability plus `alpha` times the language model's and `beta` per
token (so the model's dislike of rare words does not delete them), keeps the few prefixes that explain
the frames best as text. The decoders of pyctcdecode and torchaudio's ctc_decoder do the same with a
KenLM word model; here the model is over the decoder's own token ids, fitted in seconds on the readout's
training text (fusion/training/loop.py), so no lexicon is needed and the readout still spells any word.

The model is an interpolated absolute-discounting trigram (Ney's), stored as backoff tables: for each
kept n-gram its interpolated log-probability, for each context the log of its backoff weight; an n-gram
not kept is the context's weight times the shorter context's probability. Trigrams seen once are dropped
(`min_trigram`) and their contexts' weights renormalised, so every context's distribution still sums to
one; the file stays small. On disk an n-gram is one integer: 15 bits per token, its place in the model's
own token list (the two markers, start and end, have their own).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Iterable

import torch

START, END = -1, -2  # the sentence markers (never token ids)
_BITS = 15  # bits per packed token: its place in the model's own token list (+3), so a bigram fits int32
_NEG = -1e30


@dataclass
class TokenTrigram:
    logp: dict[tuple[int, ...], float]  # seen n-gram (1-3 tokens) -> interpolated log p(last | the rest)
    backoff: dict[tuple[int, ...], float]  # seen context (1-2 tokens) -> log of its backoff weight
    unseen: float  # log p of a token never seen (the unigram floor)
    # the language model's weight in the beam's score and the bonus per token read: chosen on the Qwen 1.5B
    # readout's held-out clips (model card); a heavier weight reads the templates better still and human
    # speech worse
    alpha: float = 0.1
    beta: float = 0.3
    beam: int = 8

    @classmethod
    def fit(cls, sequences: Iterable[list[int]], discount: float = 0.75, min_trigram: int = 2,
            vocabulary: int = 0) -> "TokenTrigram":
        """Fit on token-id sequences (sentences). `vocabulary`: how many tokens the readout can read, for
        the floor given to the ones the text never holds."""
        counts: list[Counter] = [Counter(), Counter(), Counter()]
        for seq in sequences:
            s = [START, START, *seq, END]
            for i in range(2, len(s)):
                for k in range(3):
                    counts[k][tuple(s[i - k:i + 1])] += 1
        totals: list[Counter] = [Counter(), Counter(), Counter()]  # context -> count
        types: list[Counter] = [Counter(), Counter(), Counter()]  # context -> distinct next tokens
        for k in range(3):
            for g, c in counts[k].items():
                totals[k][g[:-1]] += c
                types[k][g[:-1]] += 1
        if not totals[0]:
            raise ValueError("no text to fit the readout's language model on")
        n_types = max(vocabulary + 1, len(counts[0]))  # the readable tokens and the end
        floor = discount * types[0][()] / totals[0][()] / n_types
        logp: dict[tuple[int, ...], float] = {}
        for k in range(3):
            for g, c in counts[k].items():
                if k == 2 and c < min_trigram:
                    continue
                ctx = g[:-1]
                lower = 1 / n_types if k == 0 else math.exp(logp[g[1:]])  # a kept n-gram's suffix is kept
                logp[g] = math.log((c - discount) / totals[k][ctx] + discount * types[k][ctx] / totals[k][ctx] * lower)
        # one-token contexts keep every bigram: their weight is the interpolation's; a two-token context's
        # weight spreads what its kept trigrams leave over the bigram's estimate of the rest (Katz's
        # renormalisation), and a context that keeps none backs off with weight 1 (not stored)
        backoff = {ctx: math.log(discount * types[1][ctx] / n) for ctx, n in totals[1].items()}
        kept = defaultdict(lambda: [0.0, 0.0])  # context -> [sum of kept p, sum of their bigram p]
        for g, lp in logp.items():
            if len(g) == 3:
                kept[g[:2]][0] += math.exp(lp)
                kept[g[:2]][1] += math.exp(logp[g[1:]])
        for ctx, (p_kept, p_lower) in kept.items():
            backoff[ctx] = math.log(max(1.0 - p_kept, 1e-12) / max(1.0 - p_lower, 1e-12))
        return cls(logp, backoff, math.log(floor))

    def score(self, context: tuple[int, ...], token: int) -> float:
        """log p(token | the last two of context)."""
        ngram = (*context[-2:], token)
        while len(ngram) > 1 and ngram not in self.logp:
            ngram = ngram[1:]
        if ngram in self.logp:
            found = self.logp[ngram]
        else:
            found = self.unseen
        bow = 0.0
        ctx = context[-2:]
        for drop in range(3 - len(ngram)):  # the contexts backed off from, longest first
            bow += self.backoff.get(ctx[drop:], 0.0)
        return found + bow

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """The tables as tensors for a safetensors file: every number in float16 (log-probabilities ~0.01
        apart), so a file installed in float16 reads as the one saved; n-grams packed by their tokens'
        places in the model's own token list, so unigrams, bigrams and contexts take int32, trigrams int64."""
        tokens = sorted({t for g in self.logp for t in g if t >= 0})
        if len(tokens) + 3 > 1 << _BITS:
            raise ValueError(f"{len(tokens)} distinct tokens: at most {(1 << _BITS) - 3} pack")
        place = {END: 1, START: 2} | {t: i + 3 for i, t in enumerate(tokens)}  # 0 is "no token"

        def pack(ngram: tuple[int, ...]) -> int:
            key = 0
            for t in ngram:
                key = (key << _BITS) | place[t]
            return key

        short, long = [g for g in self.logp if len(g) < 3], [g for g in self.logp if len(g) == 3]
        ctxs = list(self.backoff)
        return {"tokens": torch.tensor(tokens, dtype=torch.int32),
                "short_keys": torch.tensor([pack(g) for g in short], dtype=torch.int32),
                "long_keys": torch.tensor([pack(g) for g in long], dtype=torch.int64),
                "logp": torch.tensor([self.logp[g] for g in short + long], dtype=torch.float16),
                "context_keys": torch.tensor([pack(c) for c in ctxs], dtype=torch.int32),
                "backoff": torch.tensor([self.backoff[c] for c in ctxs], dtype=torch.float16),
                "settings": torch.tensor([self.unseen, self.alpha, self.beta, self.beam], dtype=torch.float16)}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor]) -> "TokenTrigram":
        unseen, alpha, beta, beam = t["settings"].tolist()
        token = [0, END, START, *t["tokens"].tolist()]
        mask = (1 << _BITS) - 1

        def unpack(key: int) -> tuple[int, ...]:
            out = []
            while key:
                out.append(token[key & mask])
                key >>= _BITS
            return tuple(reversed(out))

        grams = map(unpack, t["short_keys"].tolist() + t["long_keys"].tolist())
        logp = dict(zip(grams, t["logp"].float().tolist()))
        backoff = dict(zip(map(unpack, t["context_keys"].tolist()), t["backoff"].float().tolist()))
        return cls(logp, backoff, unseen, alpha, beta, int(beam))


def _logadd(a: float, b: float) -> float:
    if a < b:
        a, b = b, a
    return a if b <= _NEG else a + math.log1p(math.exp(b - a))


def beam_search(blank: torch.Tensor, top_logp: torch.Tensor, top_ids: torch.Tensor, lm: TokenTrigram,
                prune: float = -8.0) -> list[int]:
    """CTC prefix beam search. blank (T,) the blank's log-probability per frame; top_logp, top_ids (T, K)
    the frame's best classes (descending) as log-probabilities and the token ids they read. -> token ids.

    Each prefix keeps two acoustic+language scores: ending in a blank and ending in its last token (a
    repeat of the last token extends the prefix only after a blank, as CTC merges repeats)."""
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, _NEG)}
    for b, values, ids in zip(blank.tolist(), top_logp.tolist(), top_ids.tolist()):
        grown: dict[tuple[int, ...], list[float]] = defaultdict(lambda: [_NEG, _NEG])
        for prefix, (p_blank, p_token) in beams.items():
            total = _logadd(p_blank, p_token)
            here = grown[prefix]
            here[0] = _logadd(here[0], total + b)
            last = prefix[-1] if prefix else None
            for v, token in zip(values, ids):
                if v < prune:
                    break
                if token == last:
                    here[1] = _logadd(here[1], p_token + v)  # the same token continues
                    base = p_blank  # a new one only after a blank
                else:
                    base = total
                if base <= _NEG:
                    continue
                longer = grown[(*prefix, token)]
                longer[1] = _logadd(longer[1], base + v + lm.alpha * lm.score((START, START, *prefix), token) + lm.beta)
        ranked = sorted(grown.items(), key=lambda kv: -_logadd(*kv[1]))[:lm.beam]
        beams = {prefix: (s[0], s[1]) for prefix, s in ranked}
    return list(max(beams.items(), key=lambda kv: _logadd(*kv[1]) + lm.alpha * lm.score(
        (START, START, *kv[0]), END))[0])
