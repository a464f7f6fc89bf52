"""Gestures from files: a landmark JSON (21 [x, y, z] points, or {"landmarks": [...]}) or a photo.

Photos go through the MediaPipe hand models (encoders/hand_tracking.py), loaded once per process.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

from encoders.errors import InputError
from encoders.hand_tracking import HandTracker
from encoders.hands import Gesture, classify_gesture
from encoders.vision import load_image
from fusion.weights.mediapipe import ensure_hand_models

_trackers: dict[str, object] = {}
_lock = threading.Lock()


def hand_tracker(variant: str = "lite"):
    """A fresh HandTracker (its own tracking state) on the verified MediaPipe weights; the networks
    are loaded once and shared."""
    with _lock:
        if variant not in _trackers:
            _trackers[variant] = HandTracker(*ensure_hand_models(variant))
        return _trackers[variant].fresh()


def gesture_from_photo(rgb: np.ndarray) -> tuple[Gesture, list]:
    """(gesture of the most confident hand, or none; the hands found) in one still image."""
    hands = hand_tracker()(rgb)
    best = max(hands, key=lambda h: h.presence, default=None)
    return classify_gesture(None if best is None else best.landmarks), hands


def gesture_from_file(path: Path) -> Gesture:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise InputError(f"{path.name} is not JSON ({err.msg})") from None
        points = data.get("landmarks") if isinstance(data, dict) else data
        return classify_gesture(None if points is None else np.asarray(points, dtype=np.float64))
    return gesture_from_photo(load_image(path))[0]
