"""MediaPipe's single-shot "Blaze" detectors (palms, faces), around their `.tflite` networks.

Both detectors are the same shape of graph in MediaPipe: the frame letterboxed into the network's
square (aspect kept, zero borders), an SSD over fixed-size anchors (SsdAnchorsCalculator), each anchor
regressing a box and K keypoints in input pixels (TensorsToDetectionsCalculator, scores through a
sigmoid), then WEIGHTED non-maximum suppression. Only the input size, the anchor strides, K and the
pixel range differ, so they are parameters here.

Coordinates: pixels of the input frame, x right, y down. Shape letters: A anchors, K keypoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from encoders.errors import InputError
from encoders.tflite import TFLiteGraph

NMS_IOU = 0.3  # MediaPipe's min_suppression_threshold in both graphs


@dataclass
class Detection:
    score: float
    box: np.ndarray  # x0, y0, x1, y1 in pixels
    keypoints: np.ndarray  # K x 2 in pixels


def ssd_anchors(size: int, strides: tuple[int, ...]) -> np.ndarray:
    """(A, 2) anchor centres in [0, 1], MediaPipe's SsdAnchorsCalculator as the Blaze graphs configure it
    (fixed anchor size, aspect ratio 1, plus the interpolated scale: 2 anchors per layer and cell; layers
    with the same stride share one grid)."""
    out, i = [], 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        per_cell = 2 * (j - i)
        fm = math.ceil(size / strides[i])
        ys, xs = np.meshgrid((np.arange(fm) + 0.5) / fm, (np.arange(fm) + 0.5) / fm, indexing="ij")
        cells = np.stack([xs.ravel(), ys.ravel()], 1)
        out.append(np.repeat(cells, per_cell, axis=0))
        i = j
    return np.concatenate(out).astype(np.float32)


def weighted_nms(scores: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray, iou: float = NMS_IOU):
    """MediaPipe's WEIGHTED suppression: each cluster of overlapping detections becomes one, its box and
    keypoints the score-weighted mean of the cluster, its score the best one's."""
    order = list(np.argsort(-scores))
    kept = []
    while order:
        top = order[0]
        b = boxes[order]
        x0, y0 = np.maximum(b[:, 0], boxes[top, 0]), np.maximum(b[:, 1], boxes[top, 1])
        x1, y1 = np.minimum(b[:, 2], boxes[top, 2]), np.minimum(b[:, 3], boxes[top, 3])
        inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        overlap = inter / (area + area[0] - inter + 1e-9)
        members = [order[k] for k in np.nonzero(overlap > iou)[0]]
        w = scores[members] / scores[members].sum()
        kept.append((float(scores[top]), (boxes[members] * w[:, None]).sum(0),
                     (keypoints[members] * w[:, None, None]).sum(0)))
        order = [i for k, i in enumerate(order) if overlap[k] <= iou]
    return kept


def rgb_frame(frame, min_side: int = 1) -> np.ndarray:
    """The frame as an RGB uint8 array (H, W, 3), or InputError."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8 or min(frame.shape[:2]) < min_side:
        raise InputError(f"expected an RGB uint8 image, got shape {frame.shape} dtype {frame.dtype}")
    return frame


def letterbox(frame: np.ndarray, size: int) -> tuple[np.ndarray, float, int, int]:
    """(the frame letterboxed into a size x size square, scale, left and top padding in pixels)."""
    h, w = frame.shape[:2]
    s = size / max(h, w)
    nh, nw = max(round(h * s), 1), max(round(w * s), 1)
    top, left = (size - nh) // 2, (size - nw) // 2
    boxed = np.zeros((size, size, 3), np.uint8)
    boxed[top:top + nh, left:left + nw] = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA)
    return boxed, s, left, top


class BlazeDetector:
    """One Blaze network and its decoding: __call__(RGB uint8 frame) -> detections, best first."""

    def __init__(self, model: str | Path, size: int, strides: tuple[int, ...], keypoints: int,
                 pixel_range: tuple[float, float], min_score: float, device: str | torch.device = "cpu"):
        self.net = TFLiteGraph(model).to(device).eval()
        self.device = torch.device(device)
        self.size, self.keypoints, self.min_score = size, keypoints, min_score
        self.pixel_range = pixel_range
        self.anchors = ssd_anchors(size, strides)

    def tensor(self, images: list[np.ndarray]) -> torch.Tensor:
        """RGB uint8 squares -> (B, H, W, 3) float in the network's pixel range."""
        lo, hi = self.pixel_range
        x = torch.from_numpy(np.stack(images)).to(self.device, torch.float32)
        return x / 255.0 * (hi - lo) + lo

    def __call__(self, frame: np.ndarray) -> list[Detection]:
        boxed, s, left, top = letterbox(rgb_frame(frame), self.size)
        raw, logits = self.net(self.tensor([boxed]))
        with np.errstate(over="ignore"):  # exp(100) is inf in float32: the score is then exactly 0
            scores = 1 / (1 + np.exp(-np.clip(logits[0, :, 0].cpu().numpy(), -100, 100)))
        keep = scores >= self.min_score
        if not keep.any():
            return []
        raw, scores, anchors = raw[0].cpu().numpy()[keep], scores[keep], self.anchors[keep]
        centre = raw[:, :2] / self.size + anchors  # normalised to the letterboxed square
        half = raw[:, 2:4] / self.size / 2
        boxes = np.concatenate([centre - half, centre + half], 1)
        kps = raw[:, 4:4 + 2 * self.keypoints].reshape(-1, self.keypoints, 2) / self.size + anchors[:, None]
        to_px = lambda p: (p * self.size - [left, top]) / s  # noqa: E731  letterbox removed, in pixels
        return [Detection(score, np.concatenate([to_px(box[:2]), to_px(box[2:])]), to_px(kp))
                for score, box, kp in weighted_nms(scores, boxes, kps)]
