"""Speech synthesis with espeak-ng (a Debian package): answers read aloud, and the synthetic speech the
evaluation suites and the projector training data are made of."""

from __future__ import annotations

import subprocess
import tempfile

import numpy as np
import soundfile as sf

from encoders.audio import to_mono_16k


def speak(text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
    """espeak-ng -> float32 mono at espeak's 22050 Hz, resampled to 16 kHz."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "-w", f.name, text],
                       check=True, capture_output=True)
        samples, sr = sf.read(f.name, dtype="float32")
    return to_mono_16k(samples, sr)
