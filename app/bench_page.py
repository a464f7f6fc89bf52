"""`launch.py bench page`: the Spoken question tab in a real headless Chromium, its fake microphone playing
a question: seconds from pressing Stop to the first word of the answer on the page, e2e and cascade.
Everything a person waits for is in it: the page's upload of the recording, the safety gate's reading
(Whisper's, on both paths: README "Mushroom safety"), the answer's prefill and first token, the page's
update. bench_listen measures the Assistant alone, without the page and the gate.

The questions are bench_listen's five (4.3-5.8 s, held-out espeak-ng voices); each plays in a browser
of its own (Chromium's fake microphone plays one file, from its start when the recording starts), and
the recording is stopped 0.3 s after the speech ends, the answer not read aloud. One trial per path
warms first (not counted). Before every trial the decode engine's slots forget the earlier trials, as in
bench_listen.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from app.bench_listen import QUESTIONS
from encoders.audio import SAMPLE_RATE
from encoders.speech import speak

AFTER_SPEECH_S = 0.3  # the recording goes on this long after the question
# the first line of the answer that is neither the status nor what was heard
FIRST_WORDS_JS = """() => { window.answered = null; const el = document.querySelector('#spoken-answer');
  new MutationObserver(() => {  // the markdown only: the status tracker beside it counts seconds
    const shown = el.querySelector('[data-testid="markdown"]');
    const lines = (shown ? shown.innerText : '').split('\\n').map(l => l.trim()).filter(l => l && !l.startsWith('heard')
                                                                 && !l.startsWith('Listening'));
    if (lines.length && window.answered === null) window.answered = performance.now();
  }).observe(el, {childList: true, subtree: true, characterData: true}); }"""


def _trial(page, seconds: float, mode: str) -> float:
    page.get_by_label(mode, exact=True).check()
    page.get_by_label("Read the answer aloud").uncheck()  # no speech synthesis running into the next trial
    page.evaluate(FIRST_WORDS_JS)
    page.click("#spoken-audio button:has-text('Record')")
    page.wait_for_timeout(1000 * (seconds + AFTER_SPEECH_S))
    page.evaluate("() => { window.stopped = performance.now(); }")
    page.click("#spoken-audio button:has-text('Stop')")
    page.wait_for_function("() => window.answered !== null", timeout=120_000)
    took = page.evaluate("() => (window.answered - window.stopped) / 1000")
    shown = page.inner_text("#spoken-answer")
    if "Could not do that" in shown:
        raise RuntimeError(f"the page answered with an error, not an answer: {shown}")
    page.wait_for_function("() => !document.querySelector('#spoken-answer').innerText.includes('Listening')")
    page.wait_for_timeout(1500)  # the answer finishes (its last pieces, read aloud) before the next trial
    return took


def _page_trial(browser, url: str, raw, seconds: float, mode: str) -> float:
    """One trial in a fresh page, the engine's slots holding only the system prompt."""
    raw.runtime.forget_conversations()
    ctx = browser.new_context(permissions=["microphone"])
    page = ctx.new_page()
    page.goto(url)
    page.get_by_role("tab", name="Spoken question").click()
    page.wait_for_selector("#spoken-audio")
    took = _trial(page, seconds, mode)
    ctx.close()
    time.sleep(0.5)
    return took


def bench_page(rounds: int = 2) -> dict:
    from playwright.sync_api import sync_playwright

    from app.api import asgi_app, serving_in_thread
    from app.bench import CHROMIUM, fake_device_browser
    from app.chat import ModelHolder
    from app.ui import build
    from fusion.assistant import Assistant

    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"bench page needs Debian's chromium at {CHROMIUM}: run setup.sh")
    raw = Assistant.load_default()
    holder = ModelHolder(lambda: raw)
    holder.wait()
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p, \
            serving_in_thread(asgi_app(holder, ui=build(holder).queue(default_concurrency_limit=4))) as url:
        for i, (text, voice) in enumerate(QUESTIONS):
            speech = speak(text, voice, 130, 50)
            wav = Path(tmp) / f"q{i}.wav"
            sf.write(wav, np.concatenate([speech, np.zeros(3 * SAMPLE_RATE, np.float32)]), SAMPLE_RATE)
            browser = fake_device_browser(p, audio=wav)
            if i == 0:  # warm: kernels, towers, the readout's first call (not counted)
                for mode in ("e2e", "cascade"):
                    _page_trial(browser, url, raw, len(speech) / SAMPLE_RATE, mode)
            for r in range(rounds):
                for mode in ("e2e", "cascade") if (r + i) % 2 == 0 else ("cascade", "e2e"):
                    times.setdefault(mode, []).append(_page_trial(browser, url, raw, len(speech) / SAMPLE_RATE, mode))
            browser.close()
    out: dict = {"preset": raw.preset.name if raw.preset else "custom", "questions": len(QUESTIONS), "rounds": rounds}
    for mode, values in sorted(times.items()):
        out[f"page_first_words_{mode}_s"] = round(statistics.median(values), 3)
        out[f"page_first_words_{mode}_range_s"] = f"{min(values):.2f}-{max(values):.2f}"
    out["e2e_over_cascade"] = round(out["page_first_words_e2e_s"] / out["page_first_words_cascade_s"], 3)
    return out
