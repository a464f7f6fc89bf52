"""MediaPipe Hands, ported: palm detection -> rotated hand crop -> 21 landmarks, tracked across frames.

The two networks are MediaPipe's own `.tflite` files, replayed in PyTorch (encoders/tflite.py). The
steps around them follow MediaPipe's hand-tracking graph:

1. Palm detection (192x192, letterboxed, pixels in [0, 1]): 2016 SSD anchors, scores through a
   sigmoid, boxes and 7 palm keypoints decoded against the anchors, weighted non-maximum suppression.
2. Palm -> hand region: rotated so that wrist -> middle-finger knuckle points up, enlarged 2.6x and
   shifted towards the fingers, squared.
3. Landmarks (224x224 crop of that rotated region): 21 points, hand presence, handedness; the points
   are projected back into the image.
4. Tracking: the next frame's region comes from this frame's landmarks (enlarged 2x), so the palm
   detector runs only when a hand is lost (presence below 0.5) or not yet found.

Coordinates: pixels of the input frame, x right, y down; rotation in radians, clockwise on screen.
Handedness is the model's label for an unmirrored (rear camera) image: a selfie view swaps it.
Shape letters: A anchors, K palm keypoints.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from encoders.blaze import BlazeDetector, Detection, rgb_frame
from encoders.tflite import TFLiteGraph

PALM_SIZE, LANDMARK_SIZE = 192, 224
PALM_SCORE, PRESENCE = 0.5, 0.5
PALM_STRIDES = (8, 16, 16, 16)  # 2016 anchors: 24x24x2 + 12x12x6
# the next frame's region is sized on the wrist, knuckles and first joints, not the fingertips (which
# move the most), as MediaPipe's HandLandmarksToRectCalculator does
TRACKING_POINTS = [0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18]


@dataclass
class Region:
    """A rotated rectangle in pixels."""
    cx: float
    cy: float
    width: float
    height: float
    rotation: float  # radians

    def axes(self) -> tuple[np.ndarray, np.ndarray]:
        """Unit vectors of the region's x (right) and y (down) axes in the image."""
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        return np.array([c, s]), np.array([-s, c])

    def corners(self) -> np.ndarray:
        ex, ey = self.axes()
        c = np.array([self.cx, self.cy])
        hw, hh = ex * self.width / 2, ey * self.height / 2
        return np.stack([c - hw - hh, c + hw - hh, c + hw + hh, c - hw + hh])  # tl, tr, br, bl


@dataclass
class Hand:
    landmarks: np.ndarray  # 21 x 3: x, y in pixels, z relative depth on the x scale
    presence: float
    handedness: str  # "Left" | "Right", for an unmirrored image
    handedness_score: float
    region: Region  # the crop the landmarks came from
    tracked: bool  # True when the region came from the previous frame, not the palm detector


def _normalize_angle(a: float) -> float:
    return a - 2 * math.pi * math.floor((a + math.pi) / (2 * math.pi))


def crop(frame: np.ndarray, region: Region, size: int, border=None) -> np.ndarray:
    """The rotated region resampled to size x size (bilinear), RGB uint8."""
    tl, tr, _, bl = region.corners().astype(np.float32)
    src = np.stack([tl, tr, bl])
    dst = np.array([[0, 0], [size, 0], [0, size]], np.float32)
    m = cv2.getAffineTransform(src, dst)
    mode = cv2.BORDER_REPLICATE if border is None else cv2.BORDER_CONSTANT
    return cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=mode,
                          borderValue=border or 0)


def upright_rotation(start: np.ndarray, end: np.ndarray) -> float:
    """The rotation that makes start -> end point up (pixels, y down)."""
    return _normalize_angle(math.pi / 2 - math.atan2(-(end[1] - start[1]), end[0] - start[0]))


def region_from_points(points: np.ndarray, start: np.ndarray, end: np.ndarray, scale: float, shift_y: float
                       ) -> Region:
    """A square region around `points` (pixels), rotated so start -> end points up, shifted along its own
    y axis by shift_y of its height, then scaled (MediaPipe's HandLandmarksToRect + RectTransformation)."""
    rotation = upright_rotation(start, end)
    r = Region(0, 0, 0, 0, rotation)
    ex, ey = r.axes()
    u, v = points @ ex, points @ ey  # coordinates in the rotated frame
    cu, cv_ = (u.min() + u.max()) / 2, (v.min() + v.max()) / 2
    centre = cu * ex + cv_ * ey
    w, h = u.max() - u.min(), v.max() - v.min()
    centre = centre + ey * h * shift_y
    side = max(w, h) * scale
    return Region(float(centre[0]), float(centre[1]), float(side), float(side), rotation)


class HandTracker:
    """Frames in, hands out; keeps the regions of the hands it is tracking between calls."""

    def __init__(self, palm_model: str | Path, landmark_model: str | Path, max_hands: int = 1,
                 device: str | torch.device = "cpu"):
        self.palm_detector = BlazeDetector(palm_model, PALM_SIZE, PALM_STRIDES, 7, (0.0, 1.0), PALM_SCORE, device)
        self.landmark_net = TFLiteGraph(landmark_model).to(device).eval()
        self.device = torch.device(device)
        self.max_hands = max_hands
        self.regions: list[Region] = []
        self.stats = {"frames": 0, "detections": 0}

    def reset(self) -> None:
        self.regions = []

    def fresh(self) -> "HandTracker":
        """Another tracker on the same networks, with its own tracking state (one per video stream)."""
        other = copy.copy(self)
        other.regions, other.stats = [], {"frames": 0, "detections": 0}
        return other

    def detect_palms(self, frame: np.ndarray) -> list[Detection]:
        """Palms in the whole frame, best first; keypoint 0 is the wrist centre, 2 the middle-finger
        knuckle."""
        self.stats["detections"] += 1
        return self.palm_detector(frame)

    @staticmethod
    def palm_region(palm: Detection) -> Region:
        """The hand around a palm (DetectionsToRects + RectTransformation: scale 2.6, shift_y -0.5): the box
        is axis-aligned, the rotation comes from the wrist and middle-knuckle keypoints."""
        box = palm.box
        rotation = upright_rotation(palm.keypoints[0], palm.keypoints[2])
        _, ey = Region(0, 0, 0, 0, rotation).axes()
        centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]) - 0.5 * (box[3] - box[1]) * ey
        side = max(box[2] - box[0], box[3] - box[1]) * 2.6
        return Region(float(centre[0]), float(centre[1]), float(side), float(side), rotation)

    def landmarks(self, frame: np.ndarray, regions: list[Region]) -> list[tuple[np.ndarray, float, float]]:
        """(21 x 3 landmarks in pixels, presence, right-hand score) for each region."""
        if not regions:
            return []
        crops = [crop(frame, r, LANDMARK_SIZE) for r in regions]
        x = torch.from_numpy(np.stack(crops)).to(self.device, torch.float32) / 255.0  # B, H, W, 3 in [0, 1]
        pts, presence, handed, _world = self.landmark_net(x)
        pts = pts.reshape(len(regions), 21, 3).cpu().numpy() / LANDMARK_SIZE  # normalised to the crop
        out = []
        for r, p, pr, hd in zip(regions, pts, presence[:, 0].tolist(), handed[:, 0].tolist()):
            ex, ey = r.axes()
            xy = np.array([r.cx, r.cy]) + np.outer(p[:, 0] - 0.5, ex) * r.width + np.outer(p[:, 1] - 0.5, ey) * r.height
            z = p[:, 2] / 0.4 * r.width  # MediaPipe's normalize_z, then the crop's scale
            out.append((np.concatenate([xy, z[:, None]], 1), pr, hd))
        return out

    def __call__(self, frame: np.ndarray) -> list[Hand]:
        """One RGB uint8 frame (H, W, 3) -> the hands in it (at most max_hands)."""
        frame = rgb_frame(frame, min_side=16)
        self.stats["frames"] += 1
        tracked = [True] * len(self.regions)
        regions = list(self.regions)
        if len(regions) < self.max_hands:  # look for (more) hands only when some are missing
            for palm in self.detect_palms(frame):
                r = self.palm_region(palm)
                if all(_overlap(r, t) < 0.5 for t in regions):
                    regions.append(r)
                    tracked.append(False)
                if len(regions) == self.max_hands:
                    break
        hands, self.regions = [], []
        for r, was_tracked, (pts, presence, right) in zip(regions, tracked, self.landmarks(frame, regions)):
            if presence < PRESENCE:
                continue  # lost: the detector looks again next frame
            hands.append(Hand(pts, presence, "Right" if right > 0.5 else "Left", max(right, 1 - right), r,
                              was_tracked))
            self.regions.append(region_from_points(pts[TRACKING_POINTS, :2], pts[0, :2], _knuckle_centre(pts), 2.0, -0.1))
        return hands


def _knuckle_centre(pts: np.ndarray) -> np.ndarray:
    """MediaPipe's 'up' target for a hand: halfway between the middle knuckle and the mean of the index and
    ring knuckles."""
    return ((pts[5, :2] + pts[13, :2]) / 2 + pts[9, :2]) / 2


def _overlap(a: Region, b: Region) -> float:
    """IoU of the axis-aligned bounds of two regions (enough to tell a tracked hand from a new one)."""
    ca, cb = a.corners(), b.corners()
    x0, y0 = np.maximum(ca.min(0), cb.min(0))
    x1, y1 = np.minimum(ca.max(0), cb.max(0))
    inter = max(x1 - x0, 0) * max(y1 - y0, 0)
    area = lambda c: np.prod(c.max(0) - c.min(0))  # noqa: E731
    return float(inter / (area(ca) + area(cb) - inter + 1e-9))

