"""Benchmarks that print figures (never pass/fail): `python launch.py bench hands|live|gate`
(decode and kernels: app/bench_decode.py).

hands: frames per second of the hand pipeline on 640x480 frames of a real hand video (fingerpose's
GIF, upscaled), in tracking mode (the palm detector runs only when the hand is lost) beside the peer
every user starts from, MediaPipe's static-image mode (palm detector on every frame), same process,
same weights. Also the two networks alone, per call.

live: live mode's frame -> annotated frame latency and processed frame rate, in process and through
a real Gradio server (see bench_live).

gate: time to first token of ordinary questions (typed, photo, spoken) through the safety gate
(app/safety.py) beside the same Assistant without it, interleaved in one run, and the gate's own cost.
"""

from __future__ import annotations

import re
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from app.bench_timing import timed
from app.chat import ModelHolder
from app.gestures import hand_tracker
from app.live import LiveSession
from app.safety import guard
from app.gate_cases import ORDINARY
from app.suites import EVAL_DIR, hand_video_frames, hand_video_y4m, real_hand_media
from encoders.audio import load_audio
from encoders.hand_tracking import LANDMARK_SIZE, PALM_SIZE, HandTracker
from encoders.vision import load_image
from fusion.assistant import Assistant
from fusion.prompt import Audio, Image
from fusion.runtime.generate import SamplingConfig
from fusion.weights.mediapipe import ensure_hand_models


def _frames(n: int) -> list[np.ndarray]:
    folder = real_hand_media()
    if folder is None:  # no npm: synthetic frames still time the networks, not the tracking
        rng = np.random.default_rng(0)
        return [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(n)]
    video = [cv2.resize(f, (640, 480), interpolation=cv2.INTER_LINEAR) for f in hand_video_frames(folder)]
    return [video[i % len(video)] for i in range(n)]


def bench_hands(frames: int = 120, threads: int | None = None, variant: str = "lite") -> dict:
    if threads:
        torch.set_num_threads(threads)
    tracker = HandTracker(*ensure_hand_models(variant))
    video = _frames(frames)
    out = {"frames": frames, "frame_size": "640x480", "threads": torch.get_num_threads(), "variant": variant}

    def per_call(net, size):
        x = torch.rand(1, size, size, 3)
        return statistics.median(timed(lambda: net(x), 20, warmup=3)) * 1000

    out["palm_ms"] = round(per_call(tracker.palm_detector.net, PALM_SIZE), 1)
    out["landmark_ms"] = round(per_call(tracker.landmark_net, LANDMARK_SIZE), 1)
    for mode in ("tracking", "detect_every_frame"):
        t = tracker.fresh()
        for f in video[:5]:  # warm-up
            t(f)
        t.reset()
        t.stats = {"frames": 0, "detections": 0}
        start = time.perf_counter()
        found = 0
        for f in video:
            if mode == "detect_every_frame":
                t.reset()
            found += bool(t(f))
        seconds = time.perf_counter() - start
        out[f"{mode}_fps"] = round(len(video) / seconds, 1)
        out[f"{mode}_detector_runs"] = t.stats["detections"]
        out[f"{mode}_frames_with_hand"] = found
    out["tracking_speedup"] = round(out["tracking_fps"] / out["detect_every_frame_fps"], 2)
    return out


def bench_gate(rounds: int = 5, max_tokens: int = 24) -> dict:
    """Median time to first shown piece, gate vs no gate, on the sweep's ordinary questions; each
    question asked both ways in alternating order, `rounds` times."""
    raw = Assistant.load_default()
    gated = guard(raw)
    sampling = SamplingConfig(max_new_tokens=max_tokens)
    photo = load_image(EVAL_DIR / "media" / "photos" / "chelsea.png")
    speech = load_audio(EVAL_DIR / "media" / "speech" / "gate_3.wav")  # "What is the capital of France?"
    kinds = {"typed": [(q, "auto") for q in ORDINARY], "photo": [("photo", "auto")],
             "spoken_auto": [("speech", "auto")], "spoken_e2e": [("speech", "e2e")]}
    calls = iter(range(10 ** 6))

    def fresh(what: str) -> list:
        """A question no cache has seen (each call its own): a numbered text, a photo one pixel off,
        a new recording object; the system prompt and chat template's start stay cached, as they do
        for any conversation after the first."""
        n = next(calls)
        if what == "photo":
            pixels = photo.copy()
            pixels[0, 0] = (n % 256, n // 256 % 256, 7)
            return [Image(pixels, "photo"), "What is in this picture?"]
        if what == "speech":
            return [Audio(speech.copy(), "question")]
        return [f"({n}) {what}"]

    def first_piece(bot, what, mode) -> float:
        content = fresh(what)
        t0 = time.perf_counter()
        pieces = bot.chat([{"role": "user", "content": content}], mode, sampling)
        next(pieces)
        took = time.perf_counter() - t0
        pieces.close()
        return took

    for what, mode in [q for qs in kinds.values() for q in qs]:  # warm: engine, kernels, the towers
        first_piece(gated, what, mode)
    out: dict = {"rounds": rounds}
    for kind, questions in kinds.items():
        with_gate, without = [], []
        for r in range(rounds):
            for what, mode in questions:
                order = [(gated, with_gate), (raw, without)]
                for bot, times in order if r % 2 else order[::-1]:
                    times.append(first_piece(bot, what, mode))
        out[f"ttft_{kind}_no_gate_s"] = round(statistics.median(without), 4)
        out[f"ttft_{kind}_gate_s"] = round(statistics.median(with_gate), 4)
        out[f"ttft_{kind}_ratio"] = round(statistics.median(with_gate) / statistics.median(without), 3)
    texts = [[{"role": "user", "content": q}] for q, _ in kinds["typed"]]
    out["gate_read_typed_ms"] = round(statistics.median(timed(lambda: [gated.read(m) for m in texts], 5))
                                      / len(texts) * 1000, 3)
    return out


def bench_live(frames: int = 60, threads: int | None = None, through_server: bool = True) -> dict:
    """Live mode, frame in -> annotated frame out, on 640x480 frames of the real hand video.

    In process (what the page's handler does per frame), for the 'hands' and 'mushroom' modes, and,
    with through_server, the same frames sent through a real Gradio server with gradio_client (image
    encoding, HTTP and the queue included: the latency a browser sees, less the network)."""
    if threads:
        torch.set_num_threads(threads)
    video = _frames(frames)
    assistant = Assistant.load_default()
    out = {"frames": frames, "frame_size": "640x480", "threads": torch.get_num_threads()}
    for mode in ("hands", "mushroom"):
        live = LiveSession(tracker=hand_tracker().fresh(), classify=lambda px: assistant.classify_image(px, 20))
        for f in video[:3]:
            live.process(f, mode)
        latencies = []
        start = time.perf_counter()
        for f in video:
            _, info = live.process(f, mode)
            latencies.append(info.latency_ms)
        seconds = time.perf_counter() - start
        out[f"{mode}_fps"] = round(len(video) / seconds, 1)
        out[f"{mode}_latency_ms_p50"] = round(statistics.median(latencies), 1)
        out[f"{mode}_latency_ms_p90"] = round(sorted(latencies)[int(0.9 * (len(latencies) - 1))], 1)
    if through_server:
        out.update(_live_through_server(assistant, video))
    return out


CHROMIUM = "/usr/bin/chromium"


def fake_device_browser(playwright, video: Path | None = None, audio: Path | None = None):
    """Debian's headless Chromium whose camera plays `video` (y4m) and microphone plays `audio` (wav),
    asking no permission (bench live, bench page)."""
    args = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
    args += [f"--use-file-for-fake-video-capture={video}"] if video else []
    args += [f"--use-file-for-fake-audio-capture={audio}"] if audio else []
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)


def _live_in_browser(url: str, seconds: float = 10.0) -> dict:
    """Headless Chromium with the hand video as its fake camera streams into the Live camera tab; counts
    the annotated frames that reach the page and reads the page's own readout."""
    # lazy: playwright is a test extra (pyproject.toml), absent from a plain install
    from playwright.sync_api import sync_playwright

    from app.ui import LIVE_EVERY  # lazy: app.ui (gradio) costs ~4 s at import, only bench live needs it

    folder = real_hand_media(log=lambda *_: None)
    if folder is None or not Path(CHROMIUM).exists():
        return {"browser": "skipped (needs npm for the hand video and Debian chromium)"}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        y4m = hand_video_y4m(folder, Path(tmp) / "hands.y4m")
        browser = fake_device_browser(p, video=y4m)
        page = browser.new_context(permissions=["camera"]).new_page()
        page.goto(url)
        page.get_by_role("tab", name="Live camera").click()
        page.click("#live-cam button:has-text('Click to Access Webcam')")
        page.click("#live-cam button:has-text('Start camera')", timeout=20_000)
        page.wait_for_selector("#live-out img", timeout=60_000)
        page.wait_for_timeout(2000)  # settle
        page.evaluate("""() => { window.__shown = []; let last = null;
            new MutationObserver(() => { const img = document.querySelector('#live-out img');
                if (img && img.src !== last) { last = img.src; window.__shown.push(performance.now()); } })
            .observe(document.querySelector('#live-out'), {subtree: true, childList: true, attributes: true}); }""")
        page.wait_for_timeout(seconds * 1000)
        shown = page.evaluate("() => window.__shown")
        readout = page.inner_text("#live-readout")
        browser.close()
    gaps = np.diff(shown) if len(shown) > 1 else np.array([0.0])
    server_ms = re.search(r"([\d.]+) ms per frame", readout)
    return {"browser_frames_shown_per_s": round(len(shown) / seconds, 1),
            "browser_gap_ms_p50": round(float(np.median(gaps)), 1),
            "browser_server_ms_per_frame": float(server_ms.group(1)) if server_ms else None,
            "browser_send_interval_ms": round(LIVE_EVERY * 1000)}


def _live_through_server(assistant, video: list[np.ndarray]) -> dict:
    from gradio_client import Client, handle_file  # lazy: 0.1 s at import, only bench live needs it

    from app.api import asgi_app, serving_in_thread  # lazy: ~1.2 s at import (fastapi), only bench live needs it
    from app.ui import build  # lazy: app.ui (gradio) costs ~4 s at import, only bench live needs it

    holder = ModelHolder(lambda: assistant)
    holder.wait(60)
    app = asgi_app(holder, ui=build(holder).queue(default_concurrency_limit=4))
    with tempfile.TemporaryDirectory() as tmp, serving_in_thread(app) as url:
        client = Client(url, verbose=False)
        files = []
        for i, f in enumerate(video):
            path = Path(tmp) / f"{i}.jpg"
            cv2.imwrite(str(path), f[:, :, ::-1])
            files.append(handle_file(str(path)))
        for f in files[:3]:
            client.predict(frame=f, m="hands", api_name="/live_frame")
        times = []
        for f in files:
            t = time.perf_counter()
            client.predict(frame=f, m="hands", api_name="/live_frame")
            times.append(time.perf_counter() - t)
        browser = _live_in_browser(url)
    return {**browser, "server_round_trip_ms_p50": round(statistics.median(times) * 1000, 1),
            "server_round_trip_ms_p90": round(sorted(times)[int(0.9 * (len(times) - 1))] * 1000, 1),
            "server_fps_one_client": round(len(times) / sum(times), 1)}
