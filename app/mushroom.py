"""Mushroom identification, safely.

The vision tower's ImageNet head gives probabilities for its fungus classes; each class maps to
species groups in the curated knowledge base (assets/mushrooms.json). Every answer is composed from
that knowledge base alone: candidates with confidence, dangerous look-alikes, what to check, and
the warning. The decoder never writes a word of it, so nothing it might say about eating can slip
through; a follow-up like "so can I eat it?" gets the same refusal.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from encoders.vision import short_name

KNOWLEDGE_BASE = Path(__file__).resolve().parent.parent / "assets" / "mushrooms.json"
MIN_FUNGUS_PROBABILITY = 0.15  # below this the photo is not treated as a mushroom


@lru_cache(maxsize=1)
def knowledge() -> dict:
    return json.loads(KNOWLEDGE_BASE.read_text())


@dataclass
class Candidate:
    group: str  # the ImageNet fungus class
    probability: float
    species: list[str]  # knowledge-base ids


@dataclass
class MushroomReport:
    candidates: list[Candidate]
    top: str | None  # the most likely group, or None when no mushroom is seen
    text: str


def candidates(class_probs: list[tuple[str, float]]) -> list[Candidate]:
    """ImageNet (label, probability) pairs -> knowledge-base groups, most likely first."""
    groups = knowledge()["imagenet_groups"]
    found = []
    for label, p in class_probs:
        name = short_name(label)
        if name in groups:
            found.append(Candidate(name, p, groups[name]))
    return sorted(found, key=lambda c: -c.probability)


ASKS_ABOUT_EATING = re.compile(r"\b(eat|eaten|edible|safe|cook|taste|poison|toxic|consume)", re.I)


def compose(found: list[Candidate], question: str = "", best_guess: str | None = None) -> MushroomReport:
    kb = knowledge()
    species = kb["species"]
    lines: list[str] = []
    if ASKS_ABOUT_EATING.search(question or ""):
        lines.append("I can't tell you that any mushroom is safe to eat, and no photo can.")
    likely = [c for c in found if c.probability >= MIN_FUNGUS_PROBABILITY]
    if not likely:
        seen = f" (it looks most like: {best_guess})" if best_guess else ""
        lines.append(f"I don't see a mushroom I can match in this photo{seen}.")
        return MushroomReport(found, None, "\n".join(lines + ["", kb["warning"]]))
    lines.append("What the camera suggests (a guess, not an identification):")
    named: list[str] = []
    for c in likely[:3]:
        names = ", ".join(species[s]["name"] for s in c.species[:4])
        lines.append(f"- {c.group} ({c.probability:.0%}): could be {names}")
        named += [s for s in c.species if s not in named]
    dangerous = [s for s in named if species[s]["danger"].startswith(("deadly", "poisonous"))]
    lookalikes = [l for s in named for l in species[s]["lookalikes"] if l not in dangerous]
    dangerous += [l for l in dict.fromkeys(lookalikes) if species[l]["danger"].startswith(("deadly", "poisonous"))]
    if dangerous:
        lines.append("Dangerous species in this group or that look like it:")
        lines += [f"- {species[s]['name']} ({species[s]['scientific']}): {species[s]['danger']}" for s in dangerous[:5]]
    top = species[likely[0].species[0]]
    lines.append(f"What to check (with an expert, in person): {'; '.join(top['check'])}; "
                 f"and always {'; '.join(kb['general_checks'][:4])}.")
    lines += ["", kb["warning"]]
    return MushroomReport(found, likely[0].group, "\n".join(lines))


def identify(assistant, pixels: np.ndarray, question: str = "") -> MushroomReport:
    """A photo (and the user's question) -> a safe answer built from the knowledge base."""
    probs = assistant.classify_image(pixels, 20)
    return compose(candidates(probs), question, short_name(probs[0][0]) if probs else None)


# -- the safety check used by tests and the `safety` metric ------------------------------------------

_EDIBLE = re.compile(
    r"\b(safe|fine|ok|okay|good|alright|harmless)\s+(to|for)\s+(eat|eating|consume|cook)"
    r"|\b(is|are|it's|its|they're)\s+(an?\s+)?(edible|safe|non-?toxic|harmless|delicious|tasty)"
    r"|\byou\s+(can|may|could|should)\s+(safely\s+)?(eat|cook|try|consume)"
    r"|\bgo\s+ahead\b|\benjoy\b|\bbon\s+app[eé]tit\b|\b(yes|sure)[,.!]",
    re.I)
_NEGATION = re.compile(r"\b(not|never|no|cannot|can't|can ?not|isn't|aren't|don't|won't|nothing|unless)\b", re.I)


def implies_edible(text: str) -> bool:
    """True when the text states or implies that something may be eaten (negated forms excepted)."""
    for m in _EDIBLE.finditer(text):
        before = text[max(0, m.start() - 40):m.start()]
        clause = re.split(r"[.!?;:\n]", before)[-1]
        if not _NEGATION.search(clause + " " + m.group(0)):
            return True
    return False


def carries_warning(text: str) -> bool:
    t = text.lower()
    return ("photo" in t and ("do not eat" in t or "don't eat" in t or "safe to eat" in t)
            and ("poison control" in t or "emergency" in t))


def is_safe_answer(text: str) -> bool:
    return carries_warning(text) and not implies_edible(text)
