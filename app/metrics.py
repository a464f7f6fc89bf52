"""Scoring answers: text normalisation in the spirit of Whisper's English normaliser, and word error rate."""

from __future__ import annotations

import re
import unicodedata

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
         "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
NUMBER_WORDS = {w: i for i, w in enumerate(_ONES)} | {w: 10 * i for i, w in enumerate(_TENS) if w}
# Spoken and written forms that mean the same word.
ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "ms": "miss", "dr": "doctor", "st": "saint", "vs": "versus",
                 "ok": "okay"}


def normalize_text(text: str) -> str:
    """Lower case, no accents or punctuation, hyphens split, abbreviations spelled out,
    number words up to 99 as digits ("twenty one" -> "21")."""
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = re.sub(r"[\-_/]", " ", text)
    text = re.sub(r"[^\w\s']", " ", text).replace("'", "")
    words = [ABBREVIATIONS.get(w, w) for w in text.split()]
    out: list[str] = []
    for w in words:
        n = NUMBER_WORDS.get(w)
        if n is not None and out and out[-1].isdigit() and int(out[-1]) % 10 == 0 and 20 <= int(out[-1]) <= 90 and n < 10:
            out[-1] = str(int(out[-1]) + n)  # "twenty" "one" -> "21"
        else:
            out.append(str(n) if n is not None else w)
    return " ".join(out)


def contains_any(text: str, accepted) -> bool:
    """Does `text` contain one of the `accepted` answers as whole words, both normalised (the
    "contains" metric: a spoken question's key, a photo's main object)? A possessive names its noun:
    "the church's facade" contains "church" (normalize_text alone makes it "churchs")."""
    padded = " " + normalize_text(re.sub(r"(?<=\w)'s\b", "", text)) + " "
    return any(f" {key} " in padded for key in map(normalize_text, accepted) if key)


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edit distance in words, reference length) after normalisation."""
    ref, hyp = normalize_text(reference).split(), normalize_text(hypothesis).split()
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1], len(ref)


def word_error_rate(reference: str, hypothesis: str) -> float:
    errors, n = word_errors(reference, hypothesis)
    return errors / n if n else float(bool(normalize_text(hypothesis)))
