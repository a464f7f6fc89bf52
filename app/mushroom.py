"""The curated mushroom knowledge base (assets/mushrooms.json) and the answers composed from it.

The vision tower's ImageNet head gives probabilities for its fungus classes; each class maps to
species groups in the knowledge base. Every mushroom answer a person sees is composed here, from the
knowledge base alone: emergency guidance first when someone ate one, candidates with confidence,
dangerous look-alikes, what to check, and the warning. The decoder never writes a word of it, so
nothing it might say about eating can slip through. Which turns get such an answer is decided by the
safety gate (app/safety.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

from encoders.vision import short_name

KNOWLEDGE_BASE = Path(__file__).resolve().parent.parent / "assets" / "mushrooms.json"
MIN_FUNGUS_PROBABILITY = 0.15  # below this the photo is not treated as a mushroom

REFUSAL = "I can't tell you that any wild mushroom is safe to eat, and no photo or description can."
Eater = Literal["person", "child", "pet"]  # who ate something, for the emergency guidance


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


def fungus_probability(class_probs: list[tuple[str, float]]) -> float:
    """How much of the tower's belief goes to its fungus classes together."""
    return sum(c.probability for c in candidates(class_probs))


def is_fungus_photo(class_probs: list[tuple[str, float]]) -> bool:
    return fungus_probability(class_probs) >= MIN_FUNGUS_PROBABILITY


@lru_cache(maxsize=1)
def _species_names() -> list[tuple[re.Pattern, str, tuple[str, ...]]]:
    """A pattern per species: its common name, scientific name and aliases from the knowledge base
    (plurals, hyphens and spaces alike; Chinese names without word boundaries), and the first words
    of those names, a cheap test before the pattern runs (a long text is read in milliseconds)."""
    out = []
    for sid, s in knowledge()["species"].items():
        scientific = re.sub(r"\s+spp\.$", "", s["scientific"].split(" /")[0])
        names = {s["name"].split(" (")[0], scientific, *s.get("aliases", [])}
        alternatives = []
        for name in sorted(names, key=len, reverse=True):
            body = r"[\s-]*".join(re.escape(w) for w in re.split(r"[\s-]+", name.lower()))
            alternatives.append(rf"\b{body}(?:e?s)?\b" if name.isascii() else body)
        firsts = tuple({re.split(r"[\s-]+", n.lower())[0][:5] for n in names})
        out.append((re.compile("|".join(alternatives), re.I), sid, firsts))
    return out


def species_mentioned(text: str) -> list[str]:
    """Knowledge-base species named in a text ("puffballs", "death cap", "Amanita phalloides"), in order."""
    hits = []
    lower = text.lower()
    for pattern, sid, firsts in _species_names():
        if not any(f in lower for f in firsts):
            continue
        m = pattern.search(text)
        if m:
            hits.append((m.start(), sid))
    return [sid for _, sid in sorted(hits)]


@dataclass
class Question:
    """What the safety gate read in a conversation: everything a knowledge-base answer needs."""
    found: list[Candidate] = field(default_factory=list)  # from the photos, most likely first
    best_guess: str | None = None  # the tower's top class of the last photo, when there is one
    photo: bool = False  # the conversation has a photo
    species: list[str] = field(default_factory=list)  # named in the text
    amanita_marks: bool = False  # a ring, a cup (volva) or white gills described
    eater: Eater | None = None  # someone already ate one
    plants: bool = False  # wild berries or plants rather than mushrooms
    chinese: bool = False


def _danger(sid: str) -> str:
    s = knowledge()["species"][sid]
    return f"- {s['name']} ({s['scientific']}): {s['danger']}"


def _is_dangerous(sid: str) -> bool:
    return knowledge()["species"][sid]["danger"].startswith(("deadly", "poisonous"))


def compose(q: Question) -> MushroomReport:
    """The whole answer, from the knowledge base alone; the first sentence is the emergency guidance
    when someone ate one, and the warning always closes it."""
    kb = knowledge()
    species = kb["species"]
    lines: list[str] = []
    if q.eater:
        lines.append(kb["emergency"][q.eater])
        lines.append(kb["emergency_details"])
    if q.plants and not q.photo and not q.species:
        lines.append(kb["plants"])
    else:
        lines.append(REFUSAL)
    likely = [c for c in q.found if c.probability >= MIN_FUNGUS_PROBABILITY]
    named: list[str] = []
    if q.photo and not likely:
        seen = f" (it looks most like: {q.best_guess})" if q.best_guess else ""
        lines.append(f"I don't see a mushroom I can match in this photo{seen}.")
    if likely:
        lines.append("What the camera suggests (a guess, not an identification):")
        for c in likely[:3]:
            names = ", ".join(species[s]["name"] for s in c.species[:4])
            lines.append(f"- {c.group} ({c.probability:.0%}): could be {names}")
            named += [s for s in c.species if s not in named]
    for sid in q.species:
        s = species[sid]
        looks = ", ".join(species[x]["name"] for x in s["lookalikes"])
        lines.append(f"About the {s['name'].lower()} ({s['scientific']}): {s['danger']}"
                     + (f"; it is confused with: {looks}" if looks else "") + ".")
        named += [x for x in (sid, *s["lookalikes"]) if x not in named]
    if q.amanita_marks:
        lines.append(kb["amanita_marks"])
        named += [x for x in ("death_cap", "destroying_angel") if x not in named]
    dangerous = [s for s in named if _is_dangerous(s)]
    dangerous += [x for s in named for x in species[s]["lookalikes"] if _is_dangerous(x) and x not in dangerous]
    if dangerous and (likely or q.species):
        lines.append("Dangerous species in this group or that look like it:")
        lines += [_danger(s) for s in dict.fromkeys(dangerous[:5])]
    checks = species[likely[0].species[0]]["check"] if likely else species[q.species[0]]["check"] if q.species else []
    first = f"{'; '.join(checks)}; and always " if checks else ""
    if not (q.plants and not likely and not q.species):  # the checks are a mushroom's
        lines.append(f"What to check (with an expert, in person): {first}{'; '.join(kb['general_checks'][:4])}.")
    lines += ["", kb["warning"]]
    if q.chinese:
        lines.append(kb["warning_zh"])
    # a blank line after each list, so the chat's markdown does not fold the next line into the last item
    text = "\n".join(f"\n{line}" if i and lines[i - 1].startswith("- ") and not line.startswith("- ") else line
                     for i, line in enumerate(lines))
    return MushroomReport(q.found, likely[0].group if likely else None, text)
