"""Audio: any recording -> Whisper encoder frames.

Shape letters: T samples at 16 kHz, M mel bins, F mel frames (100/s), Ta encoder frames (50/s),
Da the encoder's width.

The front end is pure functions with Whisper's constants named once, as in openai/whisper's
audio.py. Two deliberate differences from Whisper's own feature extractor:
- audio longer than one 30 s window is cut into windows and every window is encoded (never
  silently truncated);
- a clip shorter than a window is encoded at its own length unless `pad_to_window` is asked for:
  the encoder's cost grows with length and padding 5 s of speech to 30 s costs ~6x on a CPU.
  (HF's WhisperEncoder refuses anything but 3000 frames, so the tower runs its own forward over
  HF's modules, slicing the position table.) The measured trade-off is in the README.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from torch import nn

from encoders.errors import InputError, Stop, check

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
N_MELS = 80
CHUNK_LENGTH = 30  # seconds in one Whisper window
N_SAMPLES = CHUNK_LENGTH * SAMPLE_RATE  # 480000 samples in a window
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 mel frames in a window

MIN_SECONDS = 0.1
MAX_SECONDS = 600.0  # ten minutes; a longer recording is refused with a message, not cut
SILENCE_RMS = 10 ** (-50 / 20)  # loudest 20 ms under -50 dBFS counts as silence


def load_audio(source: str | os.PathLike, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """Decode an audio file to mono float32 at 16 kHz; InputError with a one-line reason otherwise."""
    path = Path(source)
    if not path.is_file():
        raise InputError(f"no such audio file: {path}")
    if path.stat().st_size == 0:
        raise InputError(f"{path.name} is empty (0 bytes)")
    try:
        info = sf.info(str(path))
        if info.frames <= 0 or info.samplerate <= 0:
            raise InputError(f"{path.name} holds no audio samples")
        _check_duration(info.frames / info.samplerate, max_seconds, path.name)
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        samples, rate = _ffmpeg_decode(path, max_seconds, err)
    return to_mono_16k(samples, rate, max_seconds, path.name)


def to_mono_16k(samples: np.ndarray, rate: int, max_seconds: float = MAX_SECONDS, name: str = "recording") -> np.ndarray:
    """Samples as a microphone or decoder gives them -> mono float32 in [-1, 1] at 16 kHz.

    Accepts (T,) or (T, channels), int16/int32/float; 8 kHz to 48 kHz and above are resampled.
    """
    a = np.asarray(samples)
    if a.ndim == 2 and a.shape[0] < a.shape[1] and a.shape[0] <= 8:  # (channels, T) -> (T, channels)
        a = a.T
    if a.ndim not in (1, 2) or a.size == 0:
        raise InputError(f"{name} holds no audio samples")
    if np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float32) / float(np.iinfo(a.dtype).max)
    a = a.astype(np.float32)
    if a.ndim == 2:
        a = a.mean(axis=1)
    if not np.isfinite(a).all():
        raise InputError(f"{name} contains invalid (NaN or infinite) samples")
    _check_duration(len(a) / rate, max_seconds, name)
    if len(a) / rate < MIN_SECONDS:
        raise InputError(f"{name} is too short ({len(a) / rate * 1000:.0f} ms); speak for at least {MIN_SECONDS} s")
    if rate != SAMPLE_RATE:
        a = AF.resample(torch.from_numpy(a), int(rate), SAMPLE_RATE).numpy()
    return np.clip(a, -1.0, 1.0)


def _check_duration(seconds: float, max_seconds: float, name: str) -> None:
    if seconds > max_seconds:
        raise InputError(f"{name} is {seconds / 60:.1f} min long; the limit is {max_seconds / 60:.0f} min "
                         f"(raise it with --max-audio-seconds)")


def _ffmpeg_decode(path: Path, max_seconds: float, first_error: Exception) -> tuple[np.ndarray, int]:
    """Formats libsndfile cannot read (browser webm/opus, m4a) go through ffmpeg when it is installed."""
    if shutil.which("ffmpeg") is None:
        raise InputError(f"{path.name} is not audio that can be read ({first_error})")
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-t", str(max_seconds + 1), "-i", str(path),
           "-f", "f32le", "-ac", "1", "-ar", str(SAMPLE_RATE), "-"]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise InputError(f"{path.name}: decoding took too long") from None
    if done.returncode != 0 or not done.stdout:
        raise InputError(f"{path.name} is not audio that can be read")
    samples = np.frombuffer(done.stdout, np.float32)
    _check_duration(len(samples) / SAMPLE_RATE, max_seconds, path.name)
    return samples, SAMPLE_RATE


def is_silent(wave: np.ndarray, threshold: float = SILENCE_RMS) -> bool:
    """True when no 20 ms stretch of the 16 kHz wave rises above the threshold RMS."""
    n = SAMPLE_RATE // 50
    frames = wave[: len(wave) // n * n].reshape(-1, n) if len(wave) >= n else wave[None]
    return float(np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1)).max()) < threshold


def windows(wave: np.ndarray) -> list[np.ndarray]:
    """Cut a wave into consecutive 30 s windows (the last one shorter); nothing is dropped."""
    return [wave[i:i + N_SAMPLES] for i in range(0, max(len(wave), 1), N_SAMPLES)]


_MEL_FILTERS: dict[str, torch.Tensor] = {}


def mel_filters(device: torch.device | str = "cpu") -> torch.Tensor:
    """(M, N_FFT//2+1) Slaney mel filterbank, as librosa (and so Whisper) builds it."""
    key = str(device)
    if key not in _MEL_FILTERS:
        fb = AF.melscale_fbanks(N_FFT // 2 + 1, 0.0, SAMPLE_RATE / 2, N_MELS, SAMPLE_RATE,
                                norm="slaney", mel_scale="slaney")
        _MEL_FILTERS[key] = fb.T.contiguous().to(device)
    return _MEL_FILTERS[key]


def log_mel_spectrogram(wave: np.ndarray | torch.Tensor, pad_to_window: bool = False) -> torch.Tensor:
    """(T,) 16 kHz wave (at most one window) -> (M, F) Whisper log-mel, F = ceil(T / HOP_LENGTH) rounded
    up to even (the encoder's second conv halves it), or N_FRAMES when pad_to_window."""
    x = torch.as_tensor(wave, dtype=torch.float32)
    if len(x) > N_SAMPLES:
        raise ValueError("log_mel_spectrogram takes one window; cut longer audio with windows()")
    n_frames = N_FRAMES if pad_to_window else 2 * ((len(x) + 2 * HOP_LENGTH - 1) // (2 * HOP_LENGTH))
    x = F.pad(x, (0, n_frames * HOP_LENGTH - len(x)))
    stft = torch.stft(x, N_FFT, HOP_LENGTH, window=torch.hann_window(N_FFT), return_complex=True)
    power = stft[..., :-1].abs() ** 2  # N_FFT//2+1, F
    mel = mel_filters() @ power  # M, F
    log_spec = mel.clamp(min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


class AudioTower(nn.Module):
    """A Whisper encoder (transformers' WhisperEncoder module) run at any length up to one window."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.feature_dim = int(encoder.config.d_model)

    def forward(self, mel: torch.Tensor, stop: Stop | None = None) -> torch.Tensor:
        """(B, M, F) with F even and <= N_FRAMES -> (B, F/2, Da). `stop`: asked before each layer
        (encoders.errors.Interrupted)."""
        enc = self.encoder
        x = F.gelu(enc.conv1(mel))
        x = F.gelu(enc.conv2(x)).transpose(1, 2)  # B, Ta, Da
        x = x + enc.embed_positions.weight[: x.shape[1]]
        for layer in enc.layers:
            check(stop)
            x = layer(x, attention_mask=None)
        return enc.layer_norm(x)

    def encode(self, wave: np.ndarray, pad_to_window: bool = False, stop: Stop | None = None) -> list[torch.Tensor]:
        """16 kHz wave -> one (Ta, Da) tensor per 30 s window, each trimmed to the speech it holds."""
        p = next(self.parameters())
        out = []
        for piece in windows(wave):
            mel = log_mel_spectrogram(piece, pad_to_window).to(p.device, p.dtype)
            frames = self(mel[None], stop)[0]
            if pad_to_window:  # keep the frames that hold the clip, not the padding
                frames = frames[: max(1, -(-len(piece) // (2 * HOP_LENGTH)))]
            out.append(frames)
        return out
