"""The CTC readout's vocabulary: the decoder's token ids for the most frequent English words in text
that is on the machine offline, so the readout can spell words its training transcripts never held.

Words are ranked by how many of Debian's `fortunes` (everyday English: sayings, jokes, quotations;
15,256 of them, 31,128 distinct words) hold them; ties are broken by how many manual pages under
/usr/share/man hold them, and words only the manuals use (many are command names: this machine's
manuals are mostly gcloud's) come after every fortune word. A word's token ids are those of " word" and " Word" (the decoder's
tokenizer splits a word after a space differently from one that starts a text). Counted once and cached.
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable

from fusion.training.speech_data import FORTUNES
from fusion.weights.fetch import cache_dir

MAN_PAGES = Path("/usr/share/man")
WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?")
ROFF = re.compile(r"\\f[A-Z]|\\\S|^\.\S+", re.M)  # troff font switches, escapes and requests


def fortune_texts() -> Iterable[str]:
    for f in sorted(FORTUNES.glob("*")) if FORTUNES.is_dir() else []:
        if "." not in f.name:
            yield from f.read_text(encoding="latin-1").split("\n%\n")  # each fortune a text


def manual_texts() -> Iterable[str]:
    for f in sorted(MAN_PAGES.glob("man*/*.gz")) if MAN_PAGES.is_dir() else []:
        try:
            yield ROFF.sub(" ", gzip.open(f, "rt", encoding="utf-8", errors="ignore").read())
        except (OSError, EOFError):
            continue


def count_words(texts: Iterable[str]) -> Counter:
    """In how many texts each lower-cased word (2+ letters, or "a"/"i") appears."""
    counts: Counter = Counter()
    for text in texts:
        counts.update({w for w in (m.lower() for m in WORD.findall(text)) if len(w) > 1 or w in ("a", "i")})
    return counts


def english_words(limit: int = 20000, cached: Path | None = None) -> list[str]:
    """The `limit` most frequent words of the offline text, most frequent first (cached as JSON)."""
    cached = cached or cache_dir() / "vocabulary" / "english_words.json"
    if cached.exists():
        words = json.loads(cached.read_text())
        if len(words) >= limit:
            return words[:limit]
    everyday, manuals = count_words(fortune_texts()), count_words(manual_texts())
    ranked = sorted(everyday, key=lambda w: (-everyday[w], -manuals[w], w))
    words = (ranked + [w for w, _ in manuals.most_common() if w not in everyday])[:limit]
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(words))
    return words


def vocabulary_ids(words: Iterable[str], encode: Callable[[str], list[int]]) -> set[int]:
    """The decoder token ids that spell the words after a space, lower-case and capitalised."""
    ids: set[int] = set()
    for w in words:
        ids.update(encode(" " + w))
        ids.update(encode(" " + w.capitalize()))
    return ids
