"""`launch.py bench listen`: seconds from the end of a spoken question to the first piece of its answer,
e2e beside the cascade, with and without listening, and through the safety gate.

Listening is what a client of POST /v1/pocket/listen does while the microphone records (the page does
not; README "Listening"): every LISTEN_EVERY seconds the recording so far
goes to Assistant.listen, which hears it (the readout's words, or Whisper's) and prefills
the conversation with it, so the answer to the finished recording computes only what changed. Here each
question is played in real time: a thread hands the pieces to listen() on the clock, as the microphone
would (the newest piece when the last is still being heard), and the answer is asked for when the
speech ends. The time counts what is still running then.

The questions: five of 4.3-5.8 s, spoken by espeak-ng voices no readout was trained on. Before every trial the
decode engine's slots forget the earlier trials and hold only the system prompt (as a server that has
answered other questions), so no trial reuses another's words.
"""

from __future__ import annotations

import statistics
import threading
import time

import numpy as np

from app.safety import guard
from encoders.audio import SAMPLE_RATE
from encoders.speech import speak
from fusion.assistant import Assistant
from fusion.prompt import Audio
from fusion.runtime.generate import SamplingConfig

LISTEN_EVERY = 0.5  # seconds between the pieces of the recording sent while it is made
QUESTIONS = [  # (text, held-out voice of the r4/r5 readouts)
    ("Could you please tell me which city is the capital of France?", "en-gb-x-rp"),
    ("I was wondering how many legs a spider has. Do you know?", "en-us+f3"),
    ("Please tell me what colour the sky is on a clear summer day.", "en+m5"),
    ("My daughter asked me which planet we live on. What should I say?", "en-us+f4"),
    ("Can you tell me what the opposite of hot is, in one word?", "en-gb-x-gbcwmd"),
]


def first_piece_after_speech(bot, wave: np.ndarray, mode: str, listening: bool, key: str) -> float:
    """Seconds from the end of the speech to the answer's first piece (see the module's docstring)."""
    length = len(wave) / SAMPLE_RATE
    finished = threading.Event()

    def microphone(start: float) -> None:
        k = 1
        while k * LISTEN_EVERY < length:
            time.sleep(max(0.0, start + k * LISTEN_EVERY - time.perf_counter()))
            piece = wave[: int(k * LISTEN_EVERY * SAMPLE_RATE)].copy()
            bot.listen([{"role": "user", "content": [Audio(piece, "question")]}], mode, key)
            k = max(k + 1, int((time.perf_counter() - start) / LISTEN_EVERY) + 1)  # pieces missed meanwhile
        finished.set()

    if listening:
        start = time.perf_counter()
        threading.Thread(target=microphone, args=(start,), daemon=True).start()
        time.sleep(max(0.0, start + length - time.perf_counter()))  # the speaker is still talking
    t0 = time.perf_counter()
    pieces = bot.chat([{"role": "user", "content": [Audio(wave.copy(), "question")]}], mode,
                      SamplingConfig(max_new_tokens=4))
    next(pieces, None)
    took = time.perf_counter() - t0
    pieces.close()
    if listening:
        finished.wait(30)  # the last piece heard before the next trial starts
    return took


def bench_listen(rounds: int = 2, gate: bool = True) -> dict:
    raw = Assistant.load_default()
    bots = {"": raw, **({"gate_": guard(raw)} if gate else {})}
    clips = [speak(text, voice, 130, 50) for text, voice in QUESTIONS]  # 4.3-5.8 s, 4.8 s on average
    out: dict = {"clip_seconds": round(statistics.fmean(len(c) / SAMPLE_RATE for c in clips), 2),
                 "preset": raw.preset.name if raw.preset else "custom"}
    for mode in ("e2e", "cascade"):  # warm: kernels, towers, the engine
        first_piece_after_speech(raw, clips[0], mode, False, "warm")
    times: dict[str, list[float]] = {}
    trial = 0
    for r in range(rounds):
        for i, clip in enumerate(clips):
            for prefix, bot in bots.items():
                for mode in ("e2e", "cascade") if (r + i) % 2 == 0 else ("cascade", "e2e"):
                    for listening in (False, True):
                        raw.runtime.forget_conversations()
                        trial += 1
                        name = f"{prefix}{mode}_{'listening' if listening else 'cold'}"
                        times.setdefault(name, []).append(
                            first_piece_after_speech(bot, clip, mode, listening, f"trial{trial}"))
    for name, values in times.items():
        out[f"ttft_{name}_s"] = round(statistics.median(values), 3)
    for prefix in bots:
        for how in ("cold", "listening"):
            out[f"{prefix}e2e_over_cascade_{how}"] = round(out[f"ttft_{prefix}e2e_{how}_s"]
                                                          / out[f"ttft_{prefix}cascade_{how}_s"], 3)
    return out
