"""Open-vocabulary training text for the audio readout: everyday English from text Debian ships, and
questions, commands and chit-chat generated over its words.

- WordNet's example sentences (Debian's `wordnet-base`: "The cat lapped up the milk."), picked so each
  frequent word appears in a few of them.
- Generated sentences: many frames (questions, commands, chit-chat, numbers, times) filled from
  WordNet's everyday nouns (animals, foods, plants, artifacts, body parts, substances) and verbs and
  adjectives, each among the most frequent English words (fusion/training/vocabulary.py), and the
  countries and capitals of `bsdgames`' quiz files.

Deterministic for a seed; a machine without the packages gets fewer sentences (none from WordNet),
never an error.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

WORDNET = Path("/usr/share/wordnet")
QUIZ = Path("/usr/share/games/bsdgames/quiz")
QUIZ_CAPITALS = ("africa", "america", "asia", "europe")  # "Country:Capital" lines
LEXICAL_FILES = {"05": "animal", "06": "artifact", "08": "body", "13": "food", "20": "plant", "27": "substance"}
SENTENCE = re.compile(r"[A-Za-z][A-Za-z ,']*[A-Za-z][.?!]?")
NUMBER_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
                "sixteen seventeen eighteen nineteen").split()
TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """0-999 spelled as spoken: 342 -> 'three hundred and forty two'."""
    if n < 20:
        return NUMBER_WORDS[n]
    if n < 100:
        return TENS[n // 10 - 2] + ("" if n % 10 == 0 else " " + NUMBER_WORDS[n % 10])
    rest = n % 100
    return NUMBER_WORDS[n // 100] + " hundred" + ("" if rest == 0 else " and " + number_words(rest))


def _data_lines(pos: str):
    path = WORDNET / f"data.{pos}"
    if path.exists():
        for line in path.read_text(encoding="latin-1").splitlines():
            if not line.startswith(" "):  # the licence header's lines start with spaces
                yield line


def wordnet_examples() -> list[str]:
    """WordNet's quoted usage examples of 3-14 words, as sentences (capitalised, ending in a stop)."""
    out: set[str] = set()
    for pos in ("noun", "verb", "adj", "adv"):
        for line in _data_lines(pos):
            for quoted in re.findall(r'"([^"]+)"', line.partition("|")[2]):
                s = " ".join(quoted.split()).strip(" ;,")
                if SENTENCE.fullmatch(s) and 3 <= len(s.split()) <= 14:
                    s = s[0].upper() + s[1:]
                    out.add(s if s[-1] in ".?!" else s + ".")
    return sorted(out)


def wordnet_lemmas(pos: str, lexical_file: str | None = None) -> list[str]:
    """Single lower-case words of one part of speech (and lexicographer file, e.g. '05' animals)."""
    out: set[str] = set()
    for line in _data_lines(pos):
        fields = line.split()
        if len(fields) < 5 or (lexical_file and fields[1] != lexical_file):
            continue
        for i in range(int(fields[3], 16)):
            word = fields[4 + 2 * i].split("(")[0]
            if word.isalpha() and word.islower():
                out.add(word)
    return sorted(out)


def plural(noun: str, irregular: dict[str, str]) -> str:
    if noun in irregular:
        return irregular[noun]
    if re.search(r"(s|x|z|ch|sh)$", noun):
        return noun + "es"
    if re.search(r"[^aeiou]y$", noun):
        return noun[:-1] + "ies"
    return noun + "s"


def quiz_capitals() -> dict[str, str]:
    """Country -> capital from bsdgames' quiz files (entries with alternatives in brackets skipped)."""
    out = {}
    for name in QUIZ_CAPITALS:
        path = QUIZ / name
        for line in path.read_text(encoding="latin-1").splitlines() if path.exists() else []:
            country, _, capital = line.partition(":")
            capital = capital.split("|")[0]
            if capital and SENTENCE.fullmatch(country) and SENTENCE.fullmatch(capital):
                out[country] = capital
    return out


def covering(sentences: list[str], frequent: list[str], limit: int, per_word: int = 3, seed: int = 0) -> list[str]:
    """Up to `limit` sentences, in a seeded order, each kept only while it holds a frequent word heard fewer
    than `per_word` times so far: many words a few times each rather than a few words many times."""
    rank = {w: i for i, w in enumerate(frequent)}
    heard: dict[str, int] = {}
    order = sentences[:]
    random.Random(seed).shuffle(order)
    out = []
    for s in order:
        words = [w for w in re.findall(r"[a-z']+", s.lower()) if w in rank]
        if any(heard.get(w, 0) < per_word for w in words):
            out.append(s)
            for w in words:
                heard[w] = heard.get(w, 0) + 1
            if len(out) == limit:
                break
    return out


class Pools:
    """The slot fillers: WordNet's everyday words among the `frequent` ones, and the quiz's places."""

    def __init__(self, frequent: list[str], nouns_top: int = 8000, others_top: int = 4000):
        top, common = set(frequent[:nouns_top]), set(frequent[:others_top])
        irregular = {}
        exceptions = WORDNET / "noun.exc"
        for line in exceptions.read_text(encoding="latin-1").splitlines() if exceptions.exists() else []:
            many, *one = line.split()
            if one:
                irregular.setdefault(one[0], many)
        self.plural = lambda noun: plural(noun, irregular)
        nouns = {name: [w for w in wordnet_lemmas("noun", f) if w in top] for f, name in LEXICAL_FILES.items()}
        fallback = ["cat", "dog", "apple", "chair", "hand", "water"]  # no WordNet: the frames still fill
        self.animal = nouns["animal"] or fallback[:2]
        self.food = nouns["food"] or fallback[2:3]
        self.thing = nouns["artifact"] or fallback[3:4]
        self.body = nouns["body"] or fallback[4:5]
        self.stuff = (nouns["substance"] + nouns["plant"]) or fallback[5:]
        self.noun = self.animal + self.food + self.thing + self.body + self.stuff
        self.verb = [w for w in wordnet_lemmas("verb") if w in common] or ["open", "clean", "fix"]
        self.adjective = [w for w in wordnet_lemmas("adj") if w in common] or ["big", "small", "hot"]
        self.capitals = quiz_capitals() or {"France": "Paris", "Japan": "Tokyo"}


APPLIANCES = ["lights", "heating", "radio", "fan", "television"]
FAVOURITES = ["colour", "animal", "food", "season", "song", "book", "game"]
ORDINALS = ["first", "third", "fifth", "tenth", "twelfth", "twentieth"]
ROOMS = ["kitchen", "bedroom", "living room", "bathroom", "garage", "office", "hallway", "garden"]
PEOPLE = ["my sister", "my brother", "my mother", "my father", "my boss", "my neighbour", "my friend", "the teacher",
          "my grandmother", "my son", "my daughter", "the doctor"]
NAMES = ["Anna", "Peter", "Sophie", "Daniel", "Nina", "Victor", "Chloe", "Samuel", "Julia", "Ahmed", "Mia", "Noah",
         "Olivia", "Ethan", "Zoe", "Leo", "Hannah", "Oscar", "Ruth", "Felix"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
FEELINGS = ["happy", "tired", "hungry", "nervous", "excited", "bored", "worried", "sleepy", "cold", "lonely"]
UNITS = [("days", "week"), ("hours", "day"), ("minutes", "hour"), ("seconds", "minute"), ("months", "year"),
         ("weeks", "year"), ("centimetres", "metre"), ("grams", "kilogram"), ("metres", "kilometre")]


def _frames(p: Pools, r: random.Random) -> list:
    """Sentence makers, each a zero-argument function drawing its slots from `p` with `r`."""
    c = r.choice
    num = lambda lo=0, hi=99: number_words(r.randint(lo, hi))  # noqa: E731
    when = lambda: c(["at " + num(1, 12), "tomorrow", "on " + c(DAYS), "tonight", "next week",  # noqa: E731
                      "in " + num(2, 59) + " minutes", "at half past " + num(1, 12), "this evening"])
    country = lambda: c(list(p.capitals))  # noqa: E731
    return [
        lambda: f"What is a {c(p.noun)}?",
        lambda: f"What is a {c(p.thing)} used for?",
        lambda: f"Where can I buy a {c(p.thing)}?",
        lambda: f"How much does a new {c(p.thing)} cost?",
        lambda: f"What color is a {c(p.noun)}?",
        lambda: f"What colour are {p.plural(c(p.stuff))}?",
        lambda: f"How many legs does a {c(p.animal)} have?",
        lambda: f"What does a {c(p.animal)} like to eat?",
        lambda: f"Where do {p.plural(c(p.animal))} live?",
        lambda: f"Is a {c(p.animal)} bigger than a {c(p.animal)}?",
        lambda: f"Can a {c(p.animal)} swim?",
        lambda: f"What sound does a {c(p.animal)} make?",
        lambda: f"How long does a {c(p.animal)} live?",
        lambda: f"Is {c(p.food)} good for you?",
        lambda: f"How do I cook {c(p.food)}?",
        lambda: f"What goes well with {c(p.food)}?",
        lambda: f"Which country is {c(list(p.capitals.values()))} in?",
        lambda: f"What is the capital of {country()}?",
        lambda: f"How far is {c(list(p.capitals.values()))} from {c(list(p.capitals.values()))}?",
        lambda: f"What language do people speak in {country()}?",
        lambda: f"I am flying to {country()} {when()}.",
        lambda: f"What is the opposite of {c(p.adjective)}?",
        lambda: f"What is another word for {c(p.adjective)}?",
        lambda: f"How do you spell {c(p.noun)}?",
        lambda: f"Give me a word that rhymes with {c(p.noun)}.",
        lambda: f"What is {num(2, 20)} times {num(2, 12)}?",
        lambda: f"What is {num()} minus {num(0, 50)}?",
        lambda: f"What is {num()} plus {num()}?",
        lambda: f"What is half of {num(2, 999)}?",
        lambda: "How many {} are there in a {}?".format(*c(UNITS)),
        lambda: f"How many {c(p.body)}s does a person have?",
        lambda: f"Why do we have a {c(p.body)}?",
        lambda: f"What is {c(p.stuff)} made of?",
        lambda: f"At what temperature does {c(p.stuff)} melt?",
        lambda: f"What is the weather like in {c(list(p.capitals.values()))} today?",
        lambda: f"Set a timer for {num(1, 59)} minutes.",
        lambda: f"Wake me up at {num(5, 11)} {c(['thirty', 'fifteen', 'forty five', 'o clock'])}.",
        lambda: f"Remind me to {c(p.verb)} the {c(p.thing)} {when()}.",
        lambda: f"Add {c(p.food)} and {c(p.food)} to the shopping list.",
        lambda: f"Turn {c(['on', 'off'])} the {c(APPLIANCES)} in the {c(ROOMS)}.",
        lambda: f"Call {c(NAMES)} {when()}.",
        lambda: f"Send a message to {c(NAMES)} saying I will be {num(5, 30)} minutes late.",
        lambda: f"Tell me a story about a {c(p.animal)} and a {c(p.thing)}.",
        lambda: f"Describe a {c(p.noun)} in three words.",
        lambda: f"How do I {c(p.verb)} a {c(p.thing)}?",
        lambda: f"Can you help me {c(p.verb)} my {c(p.thing)}?",
        lambda: f"Why is the {c(p.thing)} so {c(p.adjective)}?",
        lambda: f"Is it {c(p.adjective)} to {c(p.verb)} every day?",
        lambda: f"I love {p.plural(c(p.food))}. Do you?",
        lambda: f"{c(PEOPLE).capitalize()} just bought a {c(p.adjective)} {c(p.thing)}.",
        lambda: f"I am feeling {c(FEELINGS)} today.",
        lambda: f"Do you like {p.plural(c(p.animal))}?",
        lambda: f"What is your favourite {c(FAVOURITES)}?",
        lambda: f"My birthday is on the {c(ORDINALS)} of {c(MONTHS)}.",
        lambda: f"The meeting with {c(NAMES)} moved to {c(DAYS)} at {num(1, 12)}.",
        lambda: f"We need {num(2, 12)} {p.plural(c(p.thing))} for the {c(ROOMS)}.",
        lambda: f"There is a {c(p.animal)} in the {c(ROOMS)}!",
        lambda: f"In {c(MONTHS)} we went to {c(list(p.capitals.values()))} with {c(PEOPLE)}.",
        lambda: f"The {c(p.thing)} is next to the {c(p.thing)}.",
        lambda: f"Please {c(p.verb)} it before {c(DAYS)}.",
        lambda: f"How old is the oldest {c(p.animal)} in the world?",
        lambda: f"Which is heavier, a {c(p.thing)} or a {c(p.animal)}?",
        lambda: f"It was {c(p.adjective)} and {c(p.adjective)} outside.",
        lambda: f"Write a short poem about {p.plural(c(p.noun))}.",
        lambda: f"The year was {c(['nineteen', 'twenty'])} {num(10, 99)}.",
        lambda: f"My phone number is {' '.join(c(NUMBER_WORDS[:10]) for _ in range(7))}.",
    ]


def generated_sentences(n: int, frequent: list[str], seed: int = 0) -> list[str]:
    """n distinct sentences from the frames, the frames drawn in turn so every shape is heard."""
    r = random.Random(seed)
    frames = _frames(Pools(frequent), r)
    out: dict[str, None] = {}
    tries = 0
    while len(out) < n and tries < 20 * n:
        text = re.sub(r"\b([Aa]) (?=[aeiou])", r"\1n ", frames[tries % len(frames)]())  # "an owl"
        out[text[0].upper() + text[1:]] = None
        tries += 1
    return list(out)


def everyday_sentences(examples: int, generated: int, frequent: list[str], seed: int = 0) -> list[str]:
    """`examples` WordNet examples covering the frequent words, then `generated` generated sentences."""
    return covering(wordnet_examples(), frequent, examples, seed=seed) + generated_sentences(generated, frequent, seed)
