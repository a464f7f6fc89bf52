"""MediaPipe's models from the last `mediapipe` wheel that bundles them (0.10.21): the palm detector and
hand landmarks (encoders/hand_tracking.py) and the short-range face detector (encoders/faces.py), as
verified `.tflite` files read directly, no conversion."""

from __future__ import annotations

import shutil
from pathlib import Path

from fusion.weights.fetch import Log, PackagedFile, WeightError, cache_dir, fetch, log_stderr

# MediaPipe's short-range face detector (BlazeFace), from the same wheel: people, which ImageNet has no
# class for (encoders/faces.py)
FACE_DETECTOR = PackagedFile("mediapipe", "0.10.21",
                             "mediapipe/modules/face_detection/face_detection_short_range.tflite",
                             "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8")

# MediaPipe Hands: the last mediapipe wheel that bundles the .tflite files; read directly, no conversion.
# The "lite" pair is the default (the live mode needs the frame rate); "full" is more accurate.
HAND_MODELS = {
    "lite": (PackagedFile("mediapipe", "0.10.21", "mediapipe/modules/palm_detection/palm_detection_lite.tflite",
                          "e9a4aaddf90dda56a87235303cf00e4c2d3fb28725f68fd88772997dac905c18"),
             PackagedFile("mediapipe", "0.10.21", "mediapipe/modules/hand_landmark/hand_landmark_lite.tflite",
                          "048edd3645c9bf7397d19a9f6e3a42957d6e414c9bea6598030a2e9b624156e6")),
    "full": (PackagedFile("mediapipe", "0.10.21", "mediapipe/modules/palm_detection/palm_detection_full.tflite",
                          "1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54"),
             PackagedFile("mediapipe", "0.10.21", "mediapipe/modules/hand_landmark/hand_landmark_full.tflite",
                          "11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3")),
}


def ensure_hand_models(variant: str = "lite", log: Log = log_stderr) -> tuple[Path, Path]:
    """(palm detector, hand landmark model): verified .tflite files from the mediapipe wheel."""
    if variant not in HAND_MODELS:
        raise WeightError(f"unknown hand model {variant!r}; choose one of {sorted(HAND_MODELS)}")
    palm, landmark = (fetch(item, log) for item in HAND_MODELS[variant])
    shutil.rmtree(cache_dir() / "wheels", ignore_errors=True)  # 35 MB wheel; the two files are kept
    return palm, landmark
