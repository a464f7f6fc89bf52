"""The decoder presets: one field picks the decoder, and what a preset without trained weights does."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from encoders.errors import InputError
from fusion.assistant import Assistant
from fusion.modes import ROUTES
from fusion.presets import MODEL_ENV, PRESETS, preset
from fusion.prompt import Audio, Image


def test_the_preset_is_named_not_guessed(monkeypatch):
    monkeypatch.setenv(MODEL_ENV, "qwen-0.5b")
    assert preset().name == "qwen-0.5b" and preset("smollm-135m").name == "smollm-135m"
    with pytest.raises(ValueError, match="choose one of"):
        preset("qwen-1.5b.gguf")


def _bot(name: str, trained: set[str]) -> Assistant:
    bot = Assistant.__new__(Assistant)  # the routing rules only: no weights needed
    bot.model, bot.preset = SimpleNamespace(trained=trained), PRESETS[name]
    return bot


def test_auto_follows_the_measurements_of_the_decoder_that_runs():
    assert _bot("qwen-1.5b", set()).route("auto").images == "labels"  # text measured better (presets.py)
    assert _bot("smollm-135m", {"audio"}).route("auto") == ROUTES["auto"]
    assert _bot("qwen-1.5b", set()).route("e2e") == ROUTES["e2e"]


def test_e2e_speech_without_an_audio_projector_for_the_decoder_is_refused_with_a_reason():
    clip = Audio(np.zeros(16000, dtype=np.float32), "q.wav")
    messages = [{"role": "user", "content": [clip]}]
    bot = _bot("qwen-1.5b", set())
    with pytest.raises(InputError, match="no trained audio projector") as err:
        bot._check_audio_weights(messages, bot.route("e2e"))
    assert err.value.code == "audio_weights_missing"
    bot._check_audio_weights(messages, bot.route("auto"))  # transcribed: fine
    bot._check_audio_weights([{"role": "user", "content": [Image(np.zeros((8, 8, 3), np.uint8)), "hi"]}],
                             bot.route("e2e"))  # photos have the label readout
    _bot("smollm-135m", {"audio"})._check_audio_weights(messages, ROUTES["e2e"])
