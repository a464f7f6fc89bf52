"""Vision projector training data when only a handful of real photos can be had offline.

The teacher is the vision tower's own ImageNet head. Two kinds of samples:
- real photos (augmented), labelled by the head's top class;
- class prototypes: a real photo's patch features plus a push along one class's head-weight
  direction inside a random object region, strong enough that the head itself names that class.
  Over all 1000 classes this teaches the projector to turn "what the tower sees" into words the
  decoder can say, instead of memorising the few photos.
The target is a sentence naming the class: "This is a picture of a tabby cat."

This needs a head that is linear on average-pooled patch features (CNNs like EfficientNet); the
sampler checks that before it starts. Held out: every photo in the evaluation suites.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import cv2
import numpy as np
import torch
from safetensors.torch import load_file, save_file

from encoders.vision import load_photo, short_name
from fusion.model import OmniModel

TRAIN_PHOTOS = ["skimage:motorcycle_left.png", "skimage:motorcycle_right.png", "skimage:retina",
                "skimage:immunohistochemistry", "skimage:coins", "matplotlib:grace_hopper.jpg"]
PROMPTS = [None, "What is in this picture?", "What do you see?", "What is this?", "Describe this image.",
           "What is shown in this photo?"]
PUSH_REGION = (2, 7)  # side of the object region, in patches
TARGET_PROBABILITY = 0.6


def augment_photo(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = rgb.shape[:2]
    s = rng.uniform(0.55, 1.0)
    ch, cw = int(h * s), int(w * s)
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    img = rgb[y:y + ch, x:x + cw]
    if rng.random() < 0.5:
        img = img[:, ::-1]
    m = cv2.getRotationMatrix2D((cw / 2, ch / 2), rng.uniform(-15, 15), 1.0)
    img = cv2.warpAffine(np.ascontiguousarray(img), m, (cw, ch), borderMode=cv2.BORDER_REFLECT)
    img = img.astype(np.float32) * rng.uniform(0.7, 1.3) + rng.uniform(-25, 25)
    return np.clip(img, 0, 255).astype(np.uint8)


def naming_sentence(name: str) -> str:
    article = "an" if name[:1].lower() in "aeiou" else "a"
    return f"This is a picture of {article} {name}."


@torch.inference_mode()
def build_vision_dataset(model: OmniModel, out_dir: Path, per_photo: int = 40, seed: int = 0, log=print) -> dict:
    rng = np.random.default_rng(seed)
    tower = model.vision_tower
    maps, labels, sources = [], [], []
    for spec in TRAIN_PHOTOS:
        photo = load_photo(spec)
        for i in range(per_photo):
            img = photo if i == 0 else augment_photo(photo, rng)
            feats, logits = tower(tower.pixels([img]))
            maps.append(feats[0].to("cpu", torch.float16))
            labels.append(int(logits[0].argmax()))
            sources.append(spec)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({"maps": torch.stack(maps).contiguous()}, str(out_dir / "features.safetensors"))
    (out_dir / "meta.json").write_text(json.dumps({"labels": labels, "sources": sources, "photos": TRAIN_PHOTOS}))
    log(f"vision dataset: {len(maps)} feature maps from {len(TRAIN_PHOTOS)} photos")
    return {"maps": len(maps)}


def push_towards(feats: torch.Tensor, c: int, mask: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                 target: float = TARGET_PROBABILITY) -> torch.Tensor:
    """(N, Dv) features -> features whose masked patches lean towards class c until the pooled-linear
    head gives c at least `target` probability (features stay in ReLU6's range)."""
    eta = 0.5
    for _ in range(16):
        pushed = (feats + eta * mask[:, None] * weight[c]).clamp(0, 6)
        if torch.softmax(pushed.mean(0) @ weight.T + bias, -1)[c] >= target:
            break
        eta *= 1.5
    return pushed


def class_examples(model: OmniModel, data_dir: Path):
    """A function rng -> (patch features (N, Dv), class c): a real photo's features with the head's top
    class, or (most of the time) a photo's features pushed towards a random class inside a random region."""
    tower = model.vision_tower
    head = tower.model.get_classifier()
    real = load_file(str(data_dir / "features.safetensors"))["maps"].to(head.weight.device)
    real_labels = json.loads((data_dir / "meta.json").read_text())["labels"]
    with torch.no_grad():  # the prototype trick assumes logits = head(mean of patch features)
        probe = real[0].float()
        direct = tower.model.forward_head(probe.T.reshape(1, -1, *tower.grid))[0]
        if not torch.allclose(direct, head(probe.mean(0)), atol=1e-3):
            raise ValueError(f"{tower.config.name}: the head is not linear on pooled patch features; "
                             "class prototypes cannot be built for it")
    weight, bias = head.weight.detach().float(), head.bias.detach().float()
    h, w = tower.grid
    real_fraction = 0.3

    def draw(rng: random.Random) -> tuple[torch.Tensor, int]:
        i = rng.randrange(len(real))
        feats = real[i].float()
        if rng.random() < real_fraction:
            return feats, real_labels[i]
        c = rng.randrange(weight.shape[0])
        side_h, side_w = rng.randint(*PUSH_REGION), rng.randint(*PUSH_REGION)
        y, x = rng.randint(0, h - min(side_h, h)), rng.randint(0, w - min(side_w, w))
        mask = torch.zeros(h, w, device=real.device)
        mask[y:y + side_h, x:x + side_w] = 1
        return push_towards(feats, c, mask.flatten(), weight, bias), c

    return draw


def vision_sampler(model: OmniModel, data_dir: Path, config):
    """Decoder-loss samples: (projected tokens, prompt, the naming sentence's ids)."""
    tower = model.vision_tower
    examples = class_examples(model, data_dir)
    eos = model.tokenizer.convert_tokens_to_ids("<|im_end|>")
    targets = [model.tokenizer.encode(naming_sentence(n), add_special_tokens=False) + [eos]
               for n in map(short_name, tower.labels())]

    def draw(rng: random.Random):
        feats, c = examples(rng)
        return model.vision_projector(feats.to(model.device), tower.grid), rng.choice(PROMPTS), targets[c]

    return draw
