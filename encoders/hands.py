"""Hands: 21 MediaPipe-layout landmarks -> rock / paper / scissors / none, with a confidence.

Landmark layout (MediaPipe): 0 wrist; thumb 1-4; index 5-8; middle 9-12; ring 13-16; pinky 17-20,
each finger MCP, PIP, DIP, TIP. A finger's extension is measured by how much it bends at its PIP
and DIP joints (angles between consecutive bones), which does not change when the hand is rotated,
mirrored (left vs right hand) or moved nearer or farther from the camera.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from encoders.errors import InputError

FINGERS = {"index": (5, 6, 7, 8), "middle": (9, 10, 11, 12), "ring": (13, 14, 15, 16), "pinky": (17, 18, 19, 20)}
STRAIGHT_DEG = 50.0  # total PIP+DIP bend at or below this: extended
CURLED_DEG = 110.0  # at or above this: curled; in between: unsure
GESTURES = ("rock", "paper", "scissors")


@dataclass
class Gesture:
    name: str  # "rock" | "paper" | "scissors" | "none"
    confidence: float  # 0..1
    extended: dict[str, float]  # finger -> extension score, 1 = straight, 0 = curled


def finger_bends(landmarks: np.ndarray) -> dict[str, float]:
    """Total bend in degrees at the PIP and DIP joints of each long finger."""
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape not in ((21, 3), (21, 2)) or not np.isfinite(pts).all():
        raise InputError(f"hand landmarks must be 21 points of (x, y[, z]); got shape {pts.shape}")
    bends = {}
    for name, (mcp, pip, dip, tip) in FINGERS.items():
        bones = np.diff(pts[[mcp, pip, dip, tip]], axis=0)
        norms = np.linalg.norm(bones, axis=1)
        if (norms < 1e-9).any():
            bends[name] = 90.0
            continue
        u = bones / norms[:, None]
        cosines = np.clip((u[:-1] * u[1:]).sum(1), -1, 1)
        bends[name] = float(np.degrees(np.arccos(cosines)).sum())
    return bends


def classify_gesture(landmarks: np.ndarray | None) -> Gesture:
    """Rules on finger extension: rock = all four curled, paper = all four straight,
    scissors = index and middle straight with ring and pinky curled; anything else is none."""
    if landmarks is None:
        return Gesture("none", 1.0, {})
    bends = finger_bends(landmarks)
    ext = {f: float(np.clip((CURLED_DEG - b) / (CURLED_DEG - STRAIGHT_DEG), 0, 1)) for f, b in bends.items()}
    want = {"rock": (0, 0, 0, 0), "paper": (1, 1, 1, 1), "scissors": (1, 1, 0, 0)}
    scores = {g: 1 - max(abs(ext[f] - w) for f, w in zip(FINGERS, pattern)) for g, pattern in want.items()}
    best = max(scores, key=scores.get)
    if scores[best] < 0.5:
        return Gesture("none", 1 - scores[best], ext)
    return Gesture(best, scores[best], ext)


# -- synthetic hands: test data and evaluation suites -------------------------------------------------

_BASE = {  # MCP positions on a right palm (x to the thumb side is negative), and bone lengths
    "index": ((-0.35, 1.0), (0.42, 0.26, 0.22)), "middle": ((0.0, 1.05), (0.46, 0.29, 0.24)),
    "ring": ((0.32, 0.98), (0.42, 0.27, 0.22)), "pinky": ((0.6, 0.85), (0.33, 0.2, 0.19)),
}
_POSES = {"rock": ("curl",) * 4, "paper": ("straight",) * 4, "scissors": ("straight", "straight", "curl", "curl")}


def synthetic_hand(gesture: str, rng: np.random.Generator, rotate: bool = True, mirror: bool | None = None,
                   noise: float = 0.01) -> np.ndarray:
    """21 plausible landmarks (image-normalised, like MediaPipe's) for a gesture, randomly posed."""
    pts = np.zeros((21, 3))
    pts[1:5] = [(-0.35, 0.25, 0), (-0.6, 0.45, 0), (-0.75, 0.62, 0), (-0.85, 0.78, 0)]  # thumb
    for (name, ((x, y), lengths)), pose in zip(_BASE.items(), _POSES[gesture]):
        i = FINGERS[name][0]
        pts[i] = (x, y, 0)
        flex = rng.uniform(0, 12, 3) if pose == "straight" else rng.uniform(75, 100, 3)
        angle = 0.0
        for k, (length, f) in enumerate(zip(lengths, flex)):
            angle += np.radians(f)  # each joint bends the finger further towards the palm
            pts[i + k + 1] = pts[i + k] + length * np.array([0.0, np.cos(angle), -np.sin(angle)])
    if mirror if mirror is not None else rng.random() < 0.5:
        pts[:, 0] *= -1  # a left hand
    if rotate:
        pts = pts @ _random_rotation(rng).T
    pts = pts * rng.uniform(0.08, 0.3) + np.array([rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), 0])
    return pts + rng.normal(0, noise * np.ptp(pts[:, :2]), pts.shape)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q
