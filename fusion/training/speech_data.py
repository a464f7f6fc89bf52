"""Spoken training prompts, generated: questions with known answers, instructions, chit-chat,
dictation, numbers and names, spoken by espeak-ng in many voices, rates and pitches, then given
noise, reverb and level changes. Deterministic for a seed.

Held out (never trained on): the evaluation suites' voices and sentences, plus a slice of the
generated sentences chosen by hash, so held-out numbers measure new voices and new sentences.
"""

from __future__ import annotations

import gzip
import hashlib
import random
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from encoders.audio import SAMPLE_RATE

COUNTRIES = {"France": "Paris", "Italy": "Rome", "Japan": "Tokyo", "Spain": "Madrid", "Germany": "Berlin",
             "Egypt": "Cairo", "Canada": "Ottawa", "Russia": "Moscow", "China": "Beijing", "England": "London",
             "Greece": "Athens", "Portugal": "Lisbon", "Ireland": "Dublin", "Norway": "Oslo", "Austria": "Vienna",
             "Poland": "Warsaw", "Kenya": "Nairobi", "Peru": "Lima", "Cuba": "Havana", "Sweden": "Stockholm",
             "Australia": "Canberra", "Mexico": "Mexico City", "India": "New Delhi", "Turkey": "Ankara",
             "Argentina": "Buenos Aires", "Finland": "Helsinki", "Denmark": "Copenhagen", "Belgium": "Brussels",
             "Hungary": "Budapest", "Thailand": "Bangkok", "Vietnam": "Hanoi", "Iran": "Tehran",
             "the Netherlands": "Amsterdam", "South Korea": "Seoul", "Chile": "Santiago"}
ANIMALS = ["cat", "dog", "horse", "elephant", "lion", "whale", "eagle", "frog", "snake", "penguin", "tiger",
           "rabbit", "owl", "shark", "bear", "cow", "sheep", "duck", "monkey", "bee"]
THINGS = {"grass": "green", "snow": "white", "the sun": "yellow", "a banana": "yellow", "coal": "black",
          "a tomato": "red", "the sea": "blue", "an orange": "orange", "milk": "white", "a lemon": "yellow"}
NAMES = ["Alice", "Bob", "Maria", "David", "Sara", "James", "Lena", "Omar", "Grace", "Tom", "Emma", "Lucas"]
TASKS = ["call the dentist", "buy some bread", "water the plants", "send the report", "pick up the kids",
         "book a table", "pay the rent", "feed the cat", "take my medicine", "charge my phone"]
TIMES = ["at six", "at noon", "tomorrow morning", "on Friday", "in ten minutes", "tonight", "at half past three"]
TOPICS = ["the moon", "volcanoes", "the ocean", "honey bees", "the Roman empire", "rainbows", "chess",
          "coffee", "the human heart", "trains", "music", "the desert", "bread", "the weather"]
WORDS = ["cat", "light", "tree", "day", "blue", "fun", "rain", "star", "book", "cold"]
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]

# espeak-ng's English voices and its voice variants (`espeak-ng --voices=en`, `--voices=variant`; the
# us-mbrola and en-<language> voices need mbrola, which Debian does not ship)
ESPEAK_ENGLISH = ["en", "en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-gbclan", "en-us-nyc",
                  "en-gb-x-rp", "en-gb-x-gbcwmd"]
ESPEAK_VARIANTS = (
    "Alex Alicia Andrea Andy Annie AnxiousAndy Demonic Denis Diogo Gene Gene2 Henrique Hugo Jacky Lee Marco "
    "Mario Michael Mike Nguyen RicishayMax RicishayMax2 RicishayMax3 Storm Tweaky UniRobot adam anika "
    "anikaRobot announcer antonio aunty belinda benjamin boris caleb croak david ed edward edward2 f1 f2 f3 f4 "
    "f5 fast grandma grandpa gustave iven iven2 iven3 iven4 john kaukovalta klatt klatt2 klatt3 klatt4 klatt5 "
    "klatt6 linda m1 m2 m3 m4 m5 m6 m7 m8 marcelo max michel miguel norbert pablo paul pedro quincy rob robert "
    "robosoft robosoft2 robosoft3 robosoft4 robosoft5 robosoft6 robosoft7 robosoft8 sandro shelby steph steph2 "
    "steph3 travis victor whisper whisperf zac").split() + ["Mr serious"]
_HELD_OUT_BASES, _HELD_OUT_VARIANTS = {"en-gb-x-rp", "en-gb-x-gbcwmd"}, {"f3", "f4", "m5"}
TRAIN_VOICES = [b + suffix for b in ESPEAK_ENGLISH if b not in _HELD_OUT_BASES
                for suffix in [""] + [f"+{v}" for v in ESPEAK_VARIANTS if v not in _HELD_OUT_VARIANTS]]
FESTIVAL_SHARE = 0.15  # of the training takes: Festival's voices are few but unlike espeak's


@dataclass(frozen=True)
class Recipe:
    """What the spoken training set is made of (a new recipe, a new data folder)."""
    name: str
    train_voices: tuple[str, ...]  # espeak-ng voices
    held_out_voices: tuple[str, ...]
    festival_voices: tuple[str, ...] = ()  # training takes use one FESTIVAL_SHARE of the time
    fortunes: int = 2500  # fortune sentences spoken once each: vocabulary beyond the templates
    telephone: bool = False  # telephone band among the augmentations
    teacher_for_ctc: bool = True  # r3 was built with the teacher's answers whatever the objective
    everyday: tuple[int, int] = (0, 0)  # WordNet examples, generated sentences (fusion/training/everyday_text.py)

    def answers(self, objective: str) -> str:
        """What the teacher answers in a build for `objective`: "all" (distill needs targets) or "none"."""
        return "all" if objective == "distill" or self.teacher_for_ctc else "none"

    def folder(self, mentions: int, answers: str) -> str:
        """The data folder's name: a new recipe (or teacher) a new folder; r3's names are those it was built in."""
        if self.name == "r3":
            return f"r3-m{mentions}" if mentions else "r2"
        return f"{self.name}-m{mentions}-{answers}"

    def voice(self, i: int, take: int, held: bool, rng: np.random.Generator) -> str:
        """The voice of take `take` of prompt i."""
        if held:
            return self.held_out_voices[(i + take * 3) % len(self.held_out_voices)]
        if not self.festival_voices:  # r3: the 21 voices in turn
            return self.train_voices[(i + take * 3) % len(self.train_voices)]
        if rng.random() < FESTIVAL_SHARE:
            return self.festival_voices[int(rng.integers(len(self.festival_voices)))]
        return self.train_voices[int(rng.integers(len(self.train_voices)))]


RECIPES = {
    # the SmolLM2 readout's (shipped): 21 espeak voices, 5 held out
    "r3": Recipe("r3", ("en", "en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-gbclan", "en-us-nyc",
                        "en+m1", "en+m3", "en+m7", "en+f1", "en+f2", "en+f4", "en-us+m2", "en-us+f2", "en-gb+m4",
                        "en-gb+f1", "en+klatt", "en-us+klatt2", "en+croak", "en+whisper"),
                 ("en-us+f3", "en-gb-x-rp", "en-gb-x-gbcwmd", "en+m5", "en-us+f4")),
    # every voice: 693 espeak combinations and two Festival voices in training; held out whole: two espeak
    # voices in every variant, three variants on every voice, one Festival voice
    "r4": Recipe("r4", tuple(TRAIN_VOICES),
                 ("en-us+f3", "en-gb-x-rp", "en-gb-x-gbcwmd", "en+m5", "en-us+f4", "festival:cmu_us_slt_arctic_hts"),
                 ("festival:kal_diphone", "festival:ked_diphone"), fortunes=4500, telephone=True,
                 teacher_for_ctc=False),
}
# r4's voices, and open-vocabulary text: WordNet's examples and generated everyday sentences over its words,
# fewer fortunes (measured worse at the same budget: model card)
RECIPES["r5"] = replace(RECIPES["r4"], name="r5", fortunes=2000, everyday=(2500, 2500))


@dataclass
class Prompt:
    text: str
    key: str | None  # the answer a correct response contains, when the prompt has one
    kind: str


def prompts(seed: int = 0) -> list[Prompt]:
    """Every distinct generated prompt, in a fixed order."""
    out: list[Prompt] = []
    for c, cap in COUNTRIES.items():
        out += [Prompt(f"What is the capital of {c}?", cap, "question"),
                Prompt(f"Which city is the capital of {c}?", cap, "question"),
                Prompt(f"Tell me the capital city of {c}.", cap, "instruction")]
    for thing, colour in THINGS.items():
        out += [Prompt(f"What color is {thing}?", colour, "question")]
    for a in range(1, 11):
        for b in range(1, 11):
            if (a * 7 + b * 3) % 4 == 0:
                out.append(Prompt(f"What is {NUMBER_WORDS[a]} plus {NUMBER_WORDS[b]}?", str(a + b), "numbers"))
    for animal in ANIMALS:
        out += [Prompt(f"Tell me a fun fact about the {animal}.", None, "instruction"),
                Prompt(f"What does a {animal} eat?", None, "question"),
                Prompt(f"Where does the {animal} live?", None, "question")]
    for name in NAMES:
        out += [Prompt(f"Hello, my name is {name}. How are you today?", None, "chat"),
                Prompt(f"My friend {name} is sad today. What should I say?", None, "chat")]
    for task in TASKS:
        for t in TIMES[:4]:
            out.append(Prompt(f"Remind me to {task} {t}.", None, "dictation"))
    for topic in TOPICS:
        out += [Prompt(f"Explain {topic} in one sentence.", None, "instruction"),
                Prompt(f"Write a short poem about {topic}.", None, "instruction")]
    for w in WORDS:
        out.append(Prompt(f"Give me a word that rhymes with {w}.", None, "instruction"))
    out += [Prompt(t, None, "chat") for t in (
        "Good morning! What a lovely day.", "Can you help me plan my weekend?", "I feel tired today.",
        "Thank you very much for your help.", "What should I cook for dinner tonight?", "Tell me a joke.",
        "How do I make a cup of tea?", "What is your favourite book?", "I just got a new puppy!")]
    return out


def mention_sentences(n: int, seed: int = 0) -> list[str]:
    """n distinct sentences that name the generators' entities (countries, capitals, numbers, animals,
    colours, names) in carrier sentences the question templates do not use: each entity heard many
    times in many contexts, not only in the 8 takes of its two or three questions."""
    r = random.Random(seed)
    countries, cities = list(COUNTRIES), list(COUNTRIES.values())
    colours = sorted(set(THINGS.values()) | {"purple", "brown", "grey", "pink"})
    forms = [
        lambda: f"{r.choice(NAMES)} flew from {r.choice(countries)} to {r.choice(countries)} last "
                f"{r.choice(['week', 'year', 'summer'])}.",
        lambda: f"The train to {r.choice(cities)} leaves at {r.choice(NUMBER_WORDS[1:13])}.",
        lambda: f"Have you ever been to {r.choice(countries)} or {r.choice(countries)}?",
        lambda: f"My cousin lives in {r.choice(cities)}, the capital of {r.choice(countries)}.",
        lambda: f"I saw {r.choice(NUMBER_WORDS[2:])} {r.choice(ANIMALS)}s in {r.choice(countries)}.",
        lambda: f"{r.choice(countries)} is famous for {r.choice(TOPICS)}.",
        lambda: f"Please paint the {r.choice(['door', 'fence', 'wall', 'boat'])} {r.choice(colours)}.",
        lambda: f"{r.choice(NUMBER_WORDS)} plus {r.choice(NUMBER_WORDS)} makes a number.",
        lambda: f"The {r.choice(ANIMALS)} in the picture is {r.choice(colours)}.",
        lambda: f"We met {r.choice(NAMES)} in {r.choice(cities)} on {r.choice(['Monday', 'Friday', 'Sunday'])}.",
    ]
    out: set[str] = set()
    while len(out) < n:
        text = r.choice(forms)()
        out.add(text[0].upper() + text[1:])  # "the Netherlands is ..." starts a sentence
    return sorted(out)


FORTUNES = Path("/usr/share/games/fortunes")  # Debian `fortunes`: thousands of short English sentences
FORTUNE_SKIP = {"art", "ascii-art", "computers", "debian", "drugs", "ethnic", "knghtbrd", "linux", "linuxcookie",
                "love", "men-women", "perl", "politics", "startrek", "translate-me", "zippy"}
ASTERISK = Path("/usr/share/asterisk/sounds/en_US_f_Allison")  # one human voice, transcripts below
ASTERISK_TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")


def fortune_sentences(limit: int, seed: int = 0) -> list[str]:
    """Plain sentences of 4-14 words from the fortune files: the vocabulary the templates lack."""
    found: set[str] = set()
    for f in sorted(FORTUNES.glob("*")) if FORTUNES.is_dir() else []:
        if "." in f.name or f.name in FORTUNE_SKIP:
            continue
        for block in f.read_text(encoding="latin-1").split("\n%\n"):
            text = " ".join(" ".join(ln for ln in block.splitlines() if not ln.strip().startswith("--")).split())
            for s in re.split(r"(?<=[.!?])\s+", text):
                if re.fullmatch(r"[A-Z][A-Za-z ,']+[.?!]", s) and 4 <= len(s.split()) <= 14:
                    found.add(s)
    return random.Random(seed).sample(sorted(found), min(limit, len(found)))


def human_recordings() -> list[tuple[Path, str]]:
    """(wav, transcript) for the Asterisk prompts recorded by one human speaker (file name = key)."""
    if not ASTERISK_TRANSCRIPTS.exists():
        return []
    out = []
    for line in gzip.open(ASTERISK_TRANSCRIPTS, "rt", encoding="utf-8", errors="replace"):
        name, sep, text = line.partition(":")
        text = " ".join(text.split())
        wav = ASTERISK / f"{name.strip()}.wav"
        if sep and text and "[" not in text and len(text.split()) <= 20 and wav.exists():
            out.append((wav, text))
    return out


def is_held_out_sentence(text: str, evaluation_sentences: set[str]) -> bool:
    if text in evaluation_sentences:
        return True
    return int(hashlib.sha256(text.encode()).hexdigest(), 16) % 10 == 0  # 10% of sentences, stable


def augment(wave: np.ndarray, rng: np.random.Generator, telephone: bool = False) -> np.ndarray:
    """Level change, optional telephone band (300-3400 Hz, when asked), room reverb (exponential-decay
    noise impulse) and background noise."""
    x = wave.astype(np.float32)
    if telephone and rng.random() < 0.15:
        spectrum = np.fft.rfft(x)
        hz = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
        x = np.fft.irfft(spectrum * ((hz >= 300) & (hz <= 3400)), len(x)).astype(np.float32)
    if rng.random() < 0.4:
        n = int(SAMPLE_RATE * rng.uniform(0.05, 0.3))
        ir = rng.standard_normal(n).astype(np.float32) * np.exp(-np.linspace(0, rng.uniform(4, 9), n)).astype(np.float32)
        ir[0] = 1.0
        x = np.convolve(x, ir)[: len(x)]
    if rng.random() < 0.6:
        snr_db = rng.uniform(8, 30)
        noise = rng.standard_normal(len(x)).astype(np.float32)
        if rng.random() < 0.5:  # pinkish: smoothed
            noise = np.convolve(noise, np.ones(8, np.float32) / 8, mode="same")
        p_sig, p_noise = float((x ** 2).mean()) + 1e-12, float((noise ** 2).mean()) + 1e-12
        x = x + noise * np.sqrt(p_sig / p_noise / 10 ** (snr_db / 10))
    x = x / (np.abs(x).max() + 1e-6) * 10 ** (rng.uniform(-18, -1) / 20)
    return x.astype(np.float32)
