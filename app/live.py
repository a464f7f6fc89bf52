"""Live camera mode, importable without Gradio: one frame in, one annotated frame and a readout out.

Each browser session gets its own `LiveSession` (its own hand tracker state, its own game, its own
timing), and the UI hands it only the latest frame (Gradio drops frames that arrive while one is
being processed), so there is never a queue of stale frames.

What is drawn on the frame: the hand skeleton and the gesture (rock / paper / scissors / none) and,
in mushroom mode, the top fungus candidate from the vision tower with its confidence. The mushroom
candidate is recomputed every few frames (the vision tower is the slow part) and reused between.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np

from app.mushroom import MIN_FUNGUS_PROBABILITY, candidates, knowledge
from app.rps import COUNTDOWN, Match, Result
from encoders.errors import InputError
from encoders.hands import classify_gesture
from encoders.vision import short_name

BONES = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (5, 9), (9, 10), (10, 11), (11, 12),
         (9, 13), (13, 14), (14, 15), (15, 16), (13, 17), (17, 18), (18, 19), (19, 20), (0, 17)]
GESTURE_COLOURS = {"rock": (230, 80, 60), "paper": (60, 160, 230), "scissors": (250, 190, 40), "none": (200, 200, 200)}
MUSHROOM_EVERY = 5  # frames between vision-tower runs in mushroom mode


@dataclass
class FrameInfo:
    gesture: str = "none"
    gesture_confidence: float = 0.0
    hands: int = 0
    mushroom: str | None = None  # "fly agaric-like: agaric 62%" style readout
    latency_ms: float = 0.0  # frame in -> annotated frame out
    fps: float = 0.0  # frames processed per second, over the last few seconds

    def readout(self) -> str:
        parts = [f"{self.fps:.1f} frames/s processed", f"{self.latency_ms:.0f} ms per frame"]
        parts.append(f"hand: {self.gesture} ({self.gesture_confidence:.0%})" if self.hands else "no hand in view")
        if self.mushroom:
            parts.append(f"mushroom guess: {self.mushroom}. {knowledge()['warning_short']}")
        return " | ".join(parts)


def draw_hand(frame: np.ndarray, landmarks: np.ndarray, label: str, colour) -> None:
    pts = landmarks[:, :2].round().astype(int)
    scale = max(1, round(max(frame.shape[:2]) / 320))
    for a, b in BONES:
        cv2.line(frame, tuple(pts[a]), tuple(pts[b]), colour, 2 * scale, cv2.LINE_AA)
    for p in pts:
        cv2.circle(frame, tuple(p), 2 * scale, (255, 255, 255), -1, cv2.LINE_AA)
    x, y = pts[:, 0].min(), max(pts[:, 1].min() - 8 * scale, 12 * scale)
    cv2.putText(frame, label, (int(x), int(y)), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, colour, 2 * scale, cv2.LINE_AA)


def draw_banner(frame: np.ndarray, text: str, colour=(255, 255, 255)) -> None:
    """A dark strip along the bottom (the page puts the image's label over the top) with the text shrunk to fit."""
    h, w = frame.shape[:2]
    size = 0.5 * max(1, round(max(h, w) / 320))
    thick = max(1, round(size))
    (tw, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, size, thick)
    size *= min(1.0, (w - 12) / max(tw, 1))
    strip = max(int(44 * size), 14)
    frame[h - strip:] = (frame[h - strip:] * 0.35).astype(frame.dtype)
    cv2.putText(frame, text, (6, h - strip // 3), cv2.FONT_HERSHEY_SIMPLEX, size, colour, thick, cv2.LINE_AA)


@dataclass
class LiveSession:
    tracker: object  # encoders.hand_tracking.HandTracker (its own state)
    classify: object = None  # pixels -> [(label, probability)], for mushroom mode; None: off
    match: Match = field(default_factory=Match)
    _times: deque = field(default_factory=lambda: deque(maxlen=30))
    _frame_no: int = 0
    _mushroom: str | None = None
    last_result: Result | None = None

    def process(self, frame, mode: str = "hands", now: float | None = None) -> tuple[np.ndarray, FrameInfo]:
        """One RGB frame -> (annotated copy, info). mode: 'hands' | 'mushroom' | 'rps'."""
        start = time.perf_counter()
        now = time.monotonic() if now is None else now
        if frame is None:
            raise InputError("no camera frame: allow the camera in the browser, or check that one is connected")
        frame = np.ascontiguousarray(np.asarray(frame)[..., :3], dtype=np.uint8)
        out = frame.copy()
        info = FrameInfo()
        hands = self.tracker(frame)
        if hands:
            best = max(hands, key=lambda h: h.presence)
            g = classify_gesture(best.landmarks)
            info.gesture, info.gesture_confidence, info.hands = g.name, g.confidence, len(hands)
            for h in hands:
                gh = classify_gesture(h.landmarks)
                draw_hand(out, h.landmarks, f"{gh.name} {gh.confidence:.0%}", GESTURE_COLOURS[gh.name])
        if mode == "mushroom" and self.classify is not None:
            if self._frame_no % MUSHROOM_EVERY == 0 or self._mushroom is None:
                self._mushroom = self._mushroom_guess(frame)
            info.mushroom = self._mushroom
            draw_banner(out, f"guess: {self._mushroom} - a photo can't tell you it's safe", (255, 220, 120))
        if mode == "rps":
            self._game_step(out, info, now)
        self._frame_no += 1
        info.latency_ms = (time.perf_counter() - start) * 1000
        self._times.append(time.monotonic())
        if len(self._times) > 1:
            info.fps = (len(self._times) - 1) / max(self._times[-1] - self._times[0], 1e-6)
        return out, info

    def _mushroom_guess(self, frame: np.ndarray) -> str:
        probs = self.classify(frame)
        found = [c for c in candidates(probs) if c.probability >= MIN_FUNGUS_PROBABILITY]
        if not found:
            return f"no mushroom seen (looks like: {short_name(probs[0][0])})" if probs else "nothing"
        return f"{found[0].group} {found[0].probability:.0%}"

    # -- rock-paper-scissors ------------------------------------------------------------------------
    def start_round(self, now: float | None = None):
        self.last_result = None
        if self.match.winner:
            self.match = Match(self.match.best_of)
        return self.match.start_round(time.monotonic() if now is None else now)

    def new_match(self, best_of: int = 3) -> None:
        self.match, self.last_result = Match(best_of), None

    def _game_step(self, out: np.ndarray, info: FrameInfo, now: float) -> None:
        r = self.match.round
        if r is not None:
            self.match.observe(info.gesture, info.gesture_confidence, now)
            text = r.countdown(now)
            if text is None:
                self.last_result = self.match.finish_round()
            else:
                draw_banner(out, f"{text}   (my move is locked in: {r.commit[:10]}...)")
                return
        if self.last_result is not None:
            res = self.last_result
            draw_banner(out, f"you: {res.player or '?'}  me: {res.assistant}  -> "
                             f"{ {'player': 'you win', 'assistant': 'I win', 'tie': 'tie'}.get(res.winner, 'again')}")
        else:
            draw_banner(out, "press 'Play a round' and show rock, paper or scissors on 'shoot!'")

    def game_text(self) -> str:
        """The game panel: the countdown or the last result, and the score."""
        r = self.match.round
        lines = []
        if r is not None:
            lines.append(f"**{r.countdown(time.monotonic()) or COUNTDOWN[-1]}**: my move is locked in "
                         f"(commitment `{r.commit}`)")
        elif self.last_result is not None:
            res = self.last_result
            lines.append(res.message())
            lines.append(f"Check me: SHA-256 of `{res.assistant}:{res.nonce}` = `{res.commit}`")
        lines.append(self.match.summary())
        return "\n\n".join(lines)
