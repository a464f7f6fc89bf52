"""People in a photo: MediaPipe's short-range face detector (BlazeFace), ported like the hand models.

The vision tower's ImageNet-1k head has no class for a person: shown someone at a webcam it names
their clothes or what they hold ("jersey", "tripod"). A face detector fills that gap cheaply: 128x128
input, 896 anchors, ~7 ms a photo on one CPU core here (letterbox, network, decoding). "Short range"
is MediaPipe's selfie model: faces that fill a good part of the frame (within ~2 m of a webcam); small
faces in a crowd or a sports photo go unseen.

Keypoints (6): right eye, left eye, nose tip, mouth centre, right ear tragion, left ear tragion (the
person's right and left).
"""

from __future__ import annotations

from pathlib import Path

import torch

from encoders.blaze import BlazeDetector

FACE_SIZE = 128
FACE_STRIDES = (8, 16, 16, 16)  # 896 anchors: 16x16x2 + 8x8x6
FACE_KEYPOINTS = 6
# MediaPipe's default is 0.5, which also fires on round fruit and an animal's face (an apple 0.51, an
# orange 0.61, a squirrel 0.55 among the photos we have); real faces there score 0.79-0.95
FACE_SCORE = 0.7


class FaceDetector(BlazeDetector):
    """__call__(RGB uint8 image) -> the faces in it, best first (box and keypoints in pixels)."""

    def __init__(self, model: str | Path, min_score: float = FACE_SCORE, device: str | torch.device = "cpu"):
        super().__init__(model, FACE_SIZE, FACE_STRIDES, FACE_KEYPOINTS, (-1.0, 1.0), min_score, device)
