"""People: our PyTorch port of MediaPipe's short-range face detector against the TFLite runtime's own
outputs, faces found (and not imagined) on real photos, and how a found person reaches the decoder."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from encoders.blaze import letterbox
from encoders.errors import InputError
from encoders.faces import FACE_SIZE, FaceDetector
from fusion.prompt import Image
from encoders.vision import load_photo

REFERENCE = Path(__file__).parent / "reference" / "mediapipe_reference.npz"
WITH_FACES = ["skimage:astronaut", "skimage:camera", "matplotlib:grace_hopper.jpg"]
# no person; the apple, the orange and the squirrel score 0.51-0.61 (MediaPipe's default threshold is 0.5)
WITHOUT = ["skimage:chelsea", "skimage:coffee", "skimage:rocket", "opencv:apple.jpg", "opencv:orange.jpg",
           "opencv:squirrel_cls.jpg", "opencv:baboon.jpg"]


@pytest.fixture(scope="module")
def detector():
    from fusion.weights.fetch import WeightError, fetch
    from fusion.weights.mediapipe import FACE_DETECTOR

    try:
        return FaceDetector(fetch(FACE_DETECTOR, log=lambda *_: None))
    except WeightError as err:
        pytest.skip(f"face model unavailable: {err}")


def face_inputs() -> dict[str, np.ndarray]:
    """name -> float32 NHWC input of the face network: seeded noise and two real photos, letterboxed and
    scaled to [-1, 1] as FaceDetector does (tests/reference/record_mediapipe.py records the runtime's
    outputs for exactly these)."""
    out = {"face/noise0": np.random.default_rng(7).uniform(-1, 1, (1, FACE_SIZE, FACE_SIZE, 3)).astype(np.float32)}
    for spec in WITH_FACES[:1] + WITH_FACES[2:]:
        boxed = letterbox(load_photo(spec), FACE_SIZE)[0]
        out[f"face/{spec.split(':')[1]}"] = (boxed[None] / 255.0 * 2 - 1).astype(np.float32)
    return out


def test_the_port_matches_the_tflite_runtime(detector):
    """Scores within 0.02 and, on the best 20 anchors, boxes and keypoints within 1% of the input."""
    ref = np.load(REFERENCE)
    checked = 0
    for key, x in face_inputs().items():
        assert hashlib.sha256(x.tobytes()).hexdigest() == str(ref[f"{key}/sha256"]), f"{key}: input changed"
        raw, logits = (o.numpy()[0] for o in detector.net(torch.from_numpy(x)))
        want_raw, want_logits = ref[f"{key}/out0"][0].astype(np.float32), ref[f"{key}/out1"][0].astype(np.float32)
        sig = lambda v: 1 / (1 + np.exp(-np.clip(v, -30, 30)))  # noqa: E731
        assert np.abs(sig(logits) - sig(want_logits)).max() < 0.02
        top = np.argsort(-want_logits[:, 0])[:20]
        assert np.abs(raw[top] - want_raw[top]).max() < 0.01 * FACE_SIZE
        checked += 1
    assert checked == 3


@pytest.mark.parametrize("spec", WITH_FACES)
def test_finds_the_one_face_in_real_portraits(detector, spec):
    faces = detector(load_photo(spec))
    assert len(faces) == 1
    (x0, y0, x1, y1), kp = faces[0].box, faces[0].keypoints
    assert x1 - x0 > 40 and y1 - y0 > 40
    inside = (kp[:4, 0] > x0) & (kp[:4, 0] < x1) & (kp[:4, 1] > y0) & (kp[:4, 1] < y1)
    assert inside.all()  # eyes, nose and mouth inside the box
    assert max(kp[0, 1], kp[1, 1]) < kp[2, 1] < kp[3, 1]  # eyes above the nose above the mouth (upright)


@pytest.mark.parametrize("spec", WITHOUT)
def test_imagines_no_face_in_photos_without_people(detector, spec):
    assert detector(load_photo(spec)) == []


def test_rejects_what_is_not_an_rgb_image(detector):
    with pytest.raises(InputError):
        detector(np.zeros((32, 32), np.uint8))


class _Faces:
    """A stand-in detector: `n` faces in every image."""

    def __init__(self, n):
        self.n = n

    def __call__(self, pixels):
        return [object()] * self.n


@pytest.mark.parametrize("people", [1, 3])
def test_a_found_person_reaches_the_decoder_in_the_text_readout(tiny_omni, people):
    """With faces found, the image is the decoder's embeddings of the photo's sentences, which now say
    how many people there are; without a detector, that there are none."""
    from fusion.photo_text import photo_text

    px = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    table = tiny_omni.decoder.get_input_embeddings().weight
    ids = lambda text: tiny_omni.tokenizer(" " + text, add_special_tokens=False)["input_ids"]  # noqa: E731
    tiny_omni.face_detector = _Faces(people)
    try:
        with torch.no_grad():
            facts = tiny_omni.photo_facts(Image(px))
            tokens = tiny_omni.image_tokens(Image(px))
    finally:
        tiny_omni.face_detector = None
    assert facts.faces == people
    said = photo_text(facts)
    assert ("one person" if people == 1 else "3 people") in said
    assert torch.equal(tokens, table[ids(said)])
    with torch.no_grad():
        alone = tiny_omni.photo_facts(Image(px))
        assert alone.faces == 0 and "no people" in photo_text(alone)
        assert torch.equal(tiny_omni.image_tokens(Image(px)), table[ids(photo_text(alone))])