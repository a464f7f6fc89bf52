"""A photo's facts (encoders/scene.py) in the decoder's words: one sentence or two, the same for both paths.

The cascade puts it in the question as text ("[A photo of ...]"); the e2e readout hands the decoder its
embeddings of the same words at the image's place (fusion/projectors.py TextReadout). So "What colour is
it?", "How many people?" or "Is there a hand?" have something to be answered from, and a hedged class
("a tabby, or a tiger cat") can be said as hedged.
"""

from __future__ import annotations

from encoders.scene import PhotoFacts

ALTERNATIVE_AT_LEAST = 0.05  # a runner-up class is named when the tower gives it at least this
GESTURE_WORDS = {"rock": "a fist", "paper": "an open hand", "scissors": "a V sign (two fingers up)", "none": "a hand"}


def _a(name: str) -> str:
    return ("an " if name[:1].lower() in "aeiou" else "a ") + name


def _where(place: str) -> str:
    if place == "centre":
        return "in the centre"
    if place in ("left", "right"):
        return f"on the {place}"
    return f"at the {place}"


def _people(faces: int) -> str:
    return "no people" if faces == 0 else "one person" if faces == 1 else f"{faces} people"


def _hands(gestures: tuple[str, ...]) -> str:
    if not gestures:
        return "No hands are visible."
    words = " and ".join(GESTURE_WORDS.get(g, "a hand") for g in gestures)
    return f"{'One hand is' if len(gestures) == 1 else f'{len(gestures)} hands are'} visible: {words}."


def photo_text(facts: PhotoFacts) -> str:
    """PhotoFacts -> short plain sentences, one fact each, so a question about one finds it stated:
    "A photo of a tabby (38%; or a tiger cat 20%). The tabby is in the centre of the picture. Its colours
    are orange and brown. The background is white. It shows no people. No hands are visible." """
    (name, p), *rest = facts.classes or (("thing", 0.0),)
    alternatives = ", ".join(f"{_a(n)} {q:.0%}" for n, q in rest if q >= ALTERNATIVE_AT_LEAST)
    seen = f"{_a(name)} ({p:.0%}" + (f"; or {alternatives}" if alternatives else "") + ")"
    if facts.faces:
        out = [f"A photo of {_people(facts.faces)}.", f"An image classifier also sees {seen}."]
    else:
        out = [f"A photo of {seen}."]
    if facts.where:
        out.append(f"The {name} is {_where(facts.where)} of the picture.")
    if facts.colours:
        out.append(f"Its {'colours are' if len(facts.colours) > 1 else 'colour is'} {' and '.join(facts.colours)}.")
    if facts.background:
        out.append(f"The background is {' and '.join(facts.background)}.")
    if not facts.faces:
        out.append("It shows no people.")
    out.append(_hands(facts.hands))
    return " ".join(out)
