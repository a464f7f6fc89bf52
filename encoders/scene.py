"""What a photo shows beyond its top class: where the main object is, its colours and the scene's, the
people and hands in it. Facts, not words for any decoder (fusion/photo_text.py writes those).

- Where: the tower's class activation map. With a global-average-pool head (EfficientNet, ResNet,
  ConvNeXt) the class logit is the mean over grid cells of `W_c . f_cell + b_c`, so that per-cell score is
  exactly what each part of the picture adds to the class; its upper half is the object's mask.
- Colours: each pixel named by hue, saturation and value (a fixed palette of 11 everyday names); the
  object's are the names its mask holds more of than the rest does, the background's those covering
  most of the rest.
- People: the face detector's count; hands: the hand tracker's, each with its gesture.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from encoders.hands import classify_gesture

COLOUR_SHARE = 0.2  # a colour is named when it covers at least this share of the region (the first always)


@dataclass(frozen=True)
class PhotoFacts:
    classes: tuple[tuple[str, float], ...]  # the tower's top classes (short names) with probabilities
    where: str | None  # "left", "top right", "centre", ...: the main object's place in the picture
    colours: tuple[str, ...]  # the main object's, most covering first
    background: tuple[str, ...]  # the rest of the picture's
    faces: int
    hands: tuple[str, ...]  # one gesture per hand found: "rock", "paper", "scissors" or "none"


def pixel_colours(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> (H*W,) colour names, one of COLOURS per pixel, by hue, saturation and value."""
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV).reshape(-1, 3).astype(np.int32)
    h, s, v = hsv[:, 0] * 2, hsv[:, 1], hsv[:, 2]  # hue in degrees, saturation and value 0..255
    names = np.full(len(hsv), "red", dtype="<U6")
    lo = 0
    for hi, name in HUES:
        names[(h >= lo) & (h < hi)] = name
        lo = hi
    names[np.isin(names, ["red", "orange", "yellow"]) & (v < 150) & (s > 60)] = "brown"
    grey = s < 45
    names[grey] = np.where(v[grey] > 200, "white", "grey")
    names[v < 45] = "black"
    return names


HUES = [(15, "red"), (40, "orange"), (70, "yellow"), (165, "green"), (255, "blue"), (290, "purple"), (345, "pink"),
        (361, "red")]
COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "white", "grey", "black")


def colour_names(names: np.ndarray, inside: np.ndarray, outside: np.ndarray | None = None) -> tuple[str, ...]:
    """Per-pixel colour names and a boolean mask -> the (at most two) colours of the masked region.

    With `outside` (another mask), colours are ranked by how much more of the region they cover than of
    the outside: a white rocket against a blue sky is white even when its mask holds sky too."""
    share = lambda m: np.array([(names[m] == c).mean() if m.any() else 0.0 for c in COLOURS])  # noqa: E731
    inner = share(inside.reshape(-1))
    score = inner if outside is None or not outside.any() else inner - share(outside.reshape(-1))
    order = [i for i in np.argsort(-score) if inner[i] >= COLOUR_SHARE]
    if not order:
        order = [int(np.argmax(inner))]
    return tuple(COLOURS[i] for i in order[:2] if score[i] > 0 or i == order[0])


def place(x: float, y: float) -> str:
    """A point in the picture as fractions of its width and height -> "left", "top right", "centre", ..."""
    col = "left" if x < 1 / 3 else "right" if x > 2 / 3 else ""
    row = "top" if y < 1 / 3 else "bottom" if y > 2 / 3 else ""
    return " ".join(w for w in (row, col) if w) or "centre"


def object_mask(cam: np.ndarray, size: int) -> np.ndarray:
    """A (h, w) class activation map -> boolean (size, size) mask of its upper half (the main object)."""
    up = cv2.resize(cam.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    lo, hi = float(up.min()), float(up.max())
    return up >= lo + 0.5 * (hi - lo) if hi > lo else np.ones_like(up, dtype=bool)


def locate(mask: np.ndarray, box: tuple[float, float, float, float], shape: tuple[int, int]) -> str:
    """The mask's centre (in the tower's crop, which covers `box` = x0, y0, x1, y1 of an image of `shape`)
    as a place in the whole picture."""
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = box
    cx = x0 + (xs.mean() + 0.5) / mask.shape[1] * (x1 - x0)
    cy = y0 + (ys.mean() + 0.5) / mask.shape[0] * (y1 - y0)
    return place(cx / shape[1], cy / shape[0])


def photo_facts(classes, cam: np.ndarray | None, crop: np.ndarray, box, shape, faces: int,
                hands: list) -> PhotoFacts:
    """Assemble the facts: classes [(name, p)], the top class's activation map (or None without a linear
    head), the tower's RGB crop, its box in the image of `shape` (H, W), the faces found, the hands found
    (encoders.hand_tracking.Hand, with landmarks)."""
    if cam is None:
        mask, where = np.ones(crop.shape[:2], dtype=bool), None
    else:
        mask = object_mask(cam, crop.shape[0])
        where = locate(mask, box, shape)
    names = pixel_colours(crop)
    background = colour_names(names, ~mask) if (~mask).any() else ()
    gestures = tuple(classify_gesture(h.landmarks).name for h in hands)
    return PhotoFacts(tuple(classes), where, colour_names(names, mask, ~mask), background, faces, gestures)
