"""Benchmarks that print figures (never pass/fail): `python launch.py bench hands`.

hands: frames per second of the hand pipeline on 640x480 frames of a real hand video (fingerpose's
GIF, upscaled), in tracking mode (the palm detector runs only when the hand is lost) beside the peer
every user starts from, MediaPipe's static-image mode (palm detector on every frame), same process,
same weights. Also the two networks alone, per call.
"""

from __future__ import annotations

import statistics
import time

import numpy as np


def _frames(n: int) -> list[np.ndarray]:
    import cv2

    from app.suites import hand_video_frames, real_hand_media

    folder = real_hand_media()
    if folder is None:  # no npm: synthetic frames still time the networks, not the tracking
        rng = np.random.default_rng(0)
        return [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(n)]
    video = [cv2.resize(f, (640, 480), interpolation=cv2.INTER_LINEAR) for f in hand_video_frames(folder)]
    return [video[i % len(video)] for i in range(n)]


def bench_hands(frames: int = 120, threads: int | None = None, variant: str = "lite") -> dict:
    import torch

    from encoders.hand_tracking import LANDMARK_SIZE, PALM_SIZE, HandTracker
    from fusion.weights import ensure_hand_models

    if threads:
        torch.set_num_threads(threads)
    tracker = HandTracker(*ensure_hand_models(variant))
    video = _frames(frames)
    out = {"frames": frames, "frame_size": "640x480", "threads": torch.get_num_threads(), "variant": variant}

    def per_call(net, size):
        x = torch.rand(1, size, size, 3)
        for _ in range(3):
            net(x)
        times = []
        for _ in range(20):
            t = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t)
        return statistics.median(times) * 1000

    out["palm_ms"] = round(per_call(tracker.palm_net, PALM_SIZE), 1)
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


def print_figures(figures: dict) -> None:
    width = max(map(len, figures))
    for k, v in figures.items():
        print(f"{k:<{width}}  {v}")
