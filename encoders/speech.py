"""Speech synthesis with espeak-ng and Festival (Debian packages): answers read aloud, and the synthetic
speech the evaluation suites and the projector training data are made of.

A voice is an espeak-ng voice name ("en-gb", "en-us+f3": a voice and a variant) or "festival:<voice>"
(Debian's English Festival voices: kal_diphone, ked_diphone, cmu_us_slt_arctic_hts)."""

from __future__ import annotations

import subprocess
import tempfile

import numpy as np
import soundfile as sf

from encoders.audio import to_mono_16k

FESTIVAL = "festival:"


def speak(text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
    """Speech at `rate` words a minute (espeak's scale: 175 is its normal pace) and `pitch` 0-99 (50: the
    voice's own), float32 mono 16 kHz."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        if voice.startswith(FESTIVAL):
            _festival(text, voice[len(FESTIVAL):], rate, pitch, f.name)
        else:
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "-w", f.name, text],
                           check=True, capture_output=True)
        samples, sr = sf.read(f.name, dtype="float32")
    return to_mono_16k(samples, sr)


def _festival(text: str, voice: str, rate: int, pitch: int, out: str) -> None:
    """Festival's text2wave, its pace stretched to `rate` (its voices speak at about espeak's 160) and
    its pitch moved by sox (Festival's diphone and HTS voices have no common pitch setting): 1 pitch
    unit = 12 cents, so 25-75 spans half an octave down to half an octave up."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as raw:
        subprocess.run(["text2wave", "-eval", f"(voice_{voice})",
                        "-eval", f"(Parameter.set 'Duration_Stretch {160 / rate:.3f})", "-o", raw.name],
                       input=text.encode(), check=True, capture_output=True)
        subprocess.run(["sox", raw.name, out, "pitch", str((pitch - 50) * 12)], check=True, capture_output=True)
