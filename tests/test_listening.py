"""The e2e path's reading of a clip (the CTC readout's words) on the tiny model, through the Assistant: read
once per clip, and listening (hearing a recording still being made) giving way to answers."""

from contextlib import ExitStack

import numpy as np
import pytest
import torch

from fusion.assistant import Assistant
from fusion.prompt import Audio
from fusion.runtime.generate import SamplingConfig, Timings
from fusion.runtime.serving import RuntimeConfig

WORDS = [9, 5, 9]  # what the stand-in readout reads in every clip


@pytest.fixture()
def reading(tiny_omni, monkeypatch):
    """(assistant over the tiny model with a CTC readout that reads WORDS, the list of its readings)."""
    readout = tiny_omni.new_audio_readout(torch.tensor([5, 7, 9]))
    tiny_omni.trained = {"audio"}
    reads = []
    monkeypatch.setattr(readout, "token_ids", lambda x: reads.append(x.shape) or list(WORDS))
    yield Assistant(tiny_omni, transcriber=None, runtime=RuntimeConfig(max_len=64, slots=1)), reads
    tiny_omni.audio_readout, tiny_omni.trained = None, set()


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(int(16000 * seconds)).astype(np.float32) * 0.1


def turn(clip: Audio) -> list[dict]:
    return [{"role": "user", "content": [clip]}]


def test_an_e2e_answer_reads_a_clip_once_and_shows_the_words_it_embedded(reading):
    """The page's "heard" note and the decoder's tokens come from one reading (it was two: 0.25 s of a
    1.5B's first token); the next turn, carrying the same clip, reads it no more."""
    bot, reads = reading
    clip, timings = Audio(noise(1.0), "question"), Timings()
    list(bot.chat(turn(clip), "e2e", SamplingConfig(max_new_tokens=2), timings))
    list(bot.chat(turn(clip), "e2e", SamplingConfig(max_new_tokens=2)))
    assert len(reads) == 1
    assert timings.notes == [f"heard (e2e readout): {bot.model.tokenizer.decode(WORDS)}"]


def test_hearing_a_recording_still_being_made_gives_way_to_an_answer(reading):
    """Assistant.listen is speculative: when an answer is asked for while it hears a piece, the encoder stops
    at its next layer and nothing of the piece is kept (the same clip, answered, is read in full); a piece
    that comes while an answer is being read is not heard at all."""
    bot, reads = reading
    assert bot.listen(turn(Audio(noise(0.5, 1), "so far")), "e2e", "rec") is not None
    assert len(reads) == 1

    interrupted, layers, answer = Audio(noise(1.0, 2), "more"), [], ExitStack()
    hook = bot.model.audio_tower.encoder.layers[0].register_forward_hook(
        lambda *_: layers.append(1) or answer.enter_context(bot._asking()))  # chat() comes after the first layer
    with answer:
        assert bot.listen(turn(interrupted), "e2e", "rec") is None
    hook.remove()
    assert layers == [1] and len(reads) == 1  # one encoder layer ran, then it gave way: no reading

    with bot._asking():  # an answer being read: the next piece is not even begun
        assert bot.listen(turn(Audio(noise(1.5, 3), "again")), "e2e", "rec") is None
    assert layers == [1] and len(reads) == 1

    assert list(bot.chat(turn(interrupted), "e2e", SamplingConfig(max_new_tokens=2)))
    assert len(reads) == 2  # the interrupted clip was not cached half read


def test_a_warm_up_gives_way_while_an_answer_is_prefilled(reading):
    """The batcher says it is answering from the moment the answer is queued until its prefill is done, so a
    recording's prefill (and hearing) that comes meanwhile stops."""
    bot, _ = reading
    batcher = bot.runtime.batcher()
    seen = []
    prefill = batcher.engine.prefill

    def watched(embeds, slot=0):
        seen.append(bot._answer_asked())
        return prefill(embeds, slot)

    batcher.engine.prefill = watched
    try:
        list(bot.chat(turn(Audio(noise(1.0, 4), "question")), "e2e", SamplingConfig(max_new_tokens=2)))
    finally:
        batcher.engine.prefill = prefill
    assert seen == [True] and not bot._answer_asked()
