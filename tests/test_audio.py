"""The audio front end and tower: reference parity, chunking, and every kind of bad recording."""

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import tone
from encoders.audio import (N_FRAMES, N_SAMPLES, SAMPLE_RATE, InputError, is_silent, load_audio,
                            log_mel_spectrogram, to_mono_16k, windows)


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.2 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))
            + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def test_log_mel_matches_the_whisper_reference_feature_extractor():
    from transformers import WhisperFeatureExtractor

    wave = speechlike(4.0)
    ref = WhisperFeatureExtractor(feature_size=80)(wave, sampling_rate=SAMPLE_RATE, return_tensors="np")
    ours = log_mel_spectrogram(wave, pad_to_window=True).numpy()
    assert ours.shape == (80, N_FRAMES)
    np.testing.assert_allclose(ours, ref.input_features[0], atol=1e-4)


def test_trimmed_log_mel_is_the_padded_one_cut_to_the_clip():
    wave = speechlike(4.0)
    padded = log_mel_spectrogram(wave, pad_to_window=True)
    trimmed = log_mel_spectrogram(wave)
    assert trimmed.shape == (80, 400)  # 100 frames/s, even
    # identical except the last frames, where the window meets reflect- instead of zero-padding
    torch.testing.assert_close(trimmed[:, :-2], padded[:, :398], atol=1e-4, rtol=0)


def test_audio_over_30s_is_chunked_not_truncated(tiny_audio_tower):
    wave = speechlike(70.0)
    parts = windows(wave)
    assert [len(p) for p in parts] == [N_SAMPLES, N_SAMPLES, 10 * SAMPLE_RATE]
    assert np.array_equal(np.concatenate(parts), wave)
    with torch.no_grad():
        frames = tiny_audio_tower.encode(wave)
    assert [f.shape[0] for f in frames] == [1500, 1500, 500]  # every second of the 70 is encoded


def test_audio_tower_matches_the_transformers_encoder_on_a_full_window(tiny_audio_tower):
    mel = log_mel_spectrogram(speechlike(5.0), pad_to_window=True)[None]
    with torch.no_grad():
        ours = tiny_audio_tower(mel)
        ref = tiny_audio_tower.encoder(mel).last_hidden_state
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_short_clip_is_encoded_at_its_own_length_unless_padding_is_asked(tiny_audio_tower):
    with torch.no_grad():
        short = tiny_audio_tower.encode(speechlike(2.0))
        padded = tiny_audio_tower.encode(speechlike(2.0), pad_to_window=True)
    assert short[0].shape[0] == 100 and padded[0].shape[0] == 100  # 50 frames/s either way


# -- loading and bad input ----------------------------------------------------------------------

@pytest.mark.parametrize("fmt,ext", [("WAV", "wav"), ("FLAC", "flac"), ("MP3", "mp3"), ("OGG", "ogg")])
def test_common_formats_load_as_16k_mono(tmp_path, fmt, ext):
    path = tmp_path / f"clip.{ext}"
    sf.write(path, tone(1.0, 44100), 44100, format=fmt)
    wave = load_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - SAMPLE_RATE) < SAMPLE_RATE * 0.1  # mp3 adds a little padding


@pytest.mark.parametrize("rate,channels", [(8000, 1), (48000, 2), (44100, 2), (16000, 1)])
def test_any_rate_and_channel_count_is_resampled_to_16k_mono(tmp_path, rate, channels):
    path = tmp_path / "clip.wav"
    sf.write(path, tone(2.0, rate, channels=channels), rate)
    wave = load_audio(path)
    assert len(wave) == 2 * SAMPLE_RATE
    # a 440 Hz tone stays a 440 Hz tone
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / len(wave) - 440) < 2


def test_microphone_int16_arrays_are_scaled_and_resampled():
    samples = (tone(1.0, 48000, channels=2) * 32767).astype(np.int16)
    wave = to_mono_16k(samples, 48000)
    assert len(wave) == SAMPLE_RATE and 0.25 < np.abs(wave).max() <= 0.31


def test_bad_recordings_get_one_line_reasons(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio")
    truncated = tmp_path / "cut.wav"
    sf.write(truncated, tone(1.0), SAMPLE_RATE)
    truncated.write_bytes(truncated.read_bytes()[:30])
    cases = {tmp_path / "missing.wav": "no such", empty: "empty", text: "not audio", truncated: "audio"}
    for path, words in cases.items():
        with pytest.raises(InputError, match=words) as err:
            load_audio(path)
        assert "\n" not in str(err.value)


def test_a_recording_over_the_limit_is_refused_not_cut(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, np.zeros(11 * 60 * 8000, np.int16), 8000)  # 11 minutes
    with pytest.raises(InputError, match="11.0 min long; the limit is 10 min"):
        load_audio(path)
    assert len(load_audio(path, max_seconds=700)) == 11 * 60 * SAMPLE_RATE


def test_very_short_clip_is_refused_and_silence_is_detected():
    with pytest.raises(InputError, match="too short"):
        to_mono_16k(np.zeros(400, np.float32), SAMPLE_RATE)
    assert is_silent(np.zeros(SAMPLE_RATE, np.float32))
    assert is_silent((1e-4 * np.random.default_rng(0).standard_normal(SAMPLE_RATE)).astype(np.float32))
    assert not is_silent(speechlike(1.0))


def test_whisper_steps_through_a_one_row_float16_kernel_as_through_float32():
    """WhisperGreedy with `rows` (the decode engine's float16 product for every matrix of a step, the token
    table's included, packed from float32) reads the same tokens as the float32 loop, and its logits stay
    within float16's rounding; the cross-attention keys and values are untouched; it stays on the CPU."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperDecoder

    from encoders.whisper_decode import WhisperGreedy
    from fusion.runtime import cpu_ops

    ops = cpu_ops.load()
    if ops is None:
        pytest.skip("the C++ ops are not built on this machine (cpu_ops.unavailable_reason)")
    torch.manual_seed(0)
    cfg = WhisperConfig(vocab_size=321, d_model=64, decoder_layers=2, decoder_attention_heads=4, pad_token_id=0,
                        decoder_ffn_dim=128, max_target_positions=48)  # 321 rows: the kernel pads the table's to 328
    decoder = WhisperDecoder(cfg).eval()
    plain = WhisperGreedy(decoder, 4, torch.float32)
    rows = WhisperGreedy(decoder, 4, rows=(ops.pack_half, ops.gemv_half))
    assert not hasattr(rows.layers[0], "fc1_w") and hasattr(rows.layers[0], "ca_kv_w")  # one copy of each matrix
    x = torch.randn(1, 64)
    want, got = plain.logits(x), rows.logits(x)
    assert got.shape == (321,) and (got - want).abs().max() <= 2e-3 * want.abs().max()
    frames, none = torch.randn(30, 64), torch.tensor([], dtype=torch.long)
    tokens = [g(frames, [1, 2, 3], 0, none, none, 20) for g in (plain, rows)]
    assert tokens[0] == tokens[1] and len(tokens[0]) == 20
    with pytest.raises(ValueError, match="CPU kernel"):
        rows.to("meta")
