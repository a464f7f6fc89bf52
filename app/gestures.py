"""Gestures from files: a landmark JSON (21 [x, y, z] points, or {"landmarks": [...]}) or a photo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from encoders.errors import InputError
from encoders.hands import Gesture, classify_gesture


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
    raise InputError(f"{path.name}: gestures from photos need the hand-landmark model, which is not installed yet")
