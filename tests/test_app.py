"""The UI's logic (no Gradio needed) with a fake assistant, and the page itself through gradio_client."""

import threading

import numpy as np
import pytest

from app.chat import Conversation, ModelHolder, reply, user_content
from app.safety import SafeAssistant
from encoders.errors import InputError
from fusion.assistant import validate_conversation
from fusion.runtime.generate import SamplingConfig
from fusion.prompt import Audio, Image


class EchoAssistant:
    """Streams back how many user turns it saw and what the last one held (and the persona, if any)."""

    def chat(self, messages, mode="e2e", sampling=None, timings=None):
        validate_conversation(messages, mode)
        turns = sum(m["role"] == "user" for m in messages)
        last = next(m for m in reversed(messages) if m["role"] == "user")["content"]
        kinds = [type(p).__name__ for p in last]
        if messages[0]["role"] == "system":
            yield f"[{messages[0]['content']}] "
        yield f"turn {turns}: "
        yield " ".join(kinds)

    def heard(self, clip, mode):  # what the safety gate reads of a clip
        return "a tone"

    def image_classes(self, image, k=5):
        return self.classify_image(image.pixels, k)

    def classify_image(self, pixels, k=5):
        """A red photo looks like a fly agaric to this fake; anything else like a coffee mug."""
        if pixels.mean(axis=(0, 1))[0] > 150 and pixels.mean(axis=(0, 1))[1] < 100:
            return [("agaric", 0.62), ("mushroom", 0.2), ("coffee mug", 0.01)][:k]
        return [("coffee mug", 0.7), ("cup", 0.1)][:k]


def test_each_conversation_keeps_its_own_turns():
    a, b, bot = Conversation(), Conversation(), EchoAssistant()
    list(reply(bot, a, user_content("hello"), "e2e", SamplingConfig()))
    list(reply(bot, b, user_content("hi"), "e2e", SamplingConfig()))
    *_, last = reply(bot, a, user_content("again"), "e2e", SamplingConfig())
    assert last == "turn 2: str"
    assert [m["role"] for m in a.messages] == ["user", "assistant"] * 2 and len(b.messages) == 2
    assert a.display[-1] == {"role": "assistant", "content": "turn 2: str"}


def test_uploads_become_media_parts_with_microphone_audio_resampled():
    rate = 48000
    samples = (0.3 * np.sin(np.arange(rate) / rate * 2 * np.pi * 300) * 32767).astype(np.int16)
    content = user_content("what is this", np.zeros((20, 30, 3), np.uint8), (rate, np.stack([samples] * 2, 1)))
    assert [type(p) for p in content] == [Image, Audio, str]
    assert len(content[1].wave) == 16000


def test_a_rejected_turn_is_not_kept_and_empty_input_is_refused():
    conv, bot = Conversation(), EchoAssistant()
    with pytest.raises(InputError, match="type a message"):
        user_content("   ", None, None)
    silent = user_content(None, None, (16000, np.zeros(16000, np.int16)))
    with pytest.raises(InputError, match="silent"):
        list(reply(bot, conv, silent, "e2e", SamplingConfig()))
    assert conv.messages == [] and conv.display == []


def test_model_holder_says_loading_then_serves_and_reports_load_failures():
    gate = threading.Event()
    holder = ModelHolder(lambda: (gate.wait(5), "model")[1])
    with pytest.raises(InputError, match="still loading"):
        holder.get()
    gate.set()
    holder.wait(5)
    assert isinstance(holder.get(), SafeAssistant) and holder.get().inner == "model"  # served behind the gate

    def broken():
        raise FileNotFoundError("weights missing")

    failed = ModelHolder(broken)
    failed.wait(5)
    with pytest.raises(InputError, match="failed to load: FileNotFoundError: weights missing"):
        failed.get()


def test_regenerate_replaces_the_last_answer_and_a_persona_applies_to_every_turn():
    from app.chat import regenerate

    conv, bot = Conversation(), EchoAssistant()
    list(reply(bot, conv, user_content("hello"), "e2e", SamplingConfig(), system="Be a poet."))
    assert conv.last_answer() == "[Be a poet.] turn 1: str"
    *_, again = regenerate(bot, conv, "e2e", SamplingConfig())
    assert again == "turn 1: str" and len(conv.messages) == 2 and len(conv.display) == 2
    with pytest.raises(InputError, match="nothing to regenerate"):
        list(regenerate(bot, Conversation(), "e2e", SamplingConfig()))


def test_a_stopped_answer_is_kept_as_far_as_it_got():
    conv, bot = Conversation(), EchoAssistant()
    stream = reply(bot, conv, user_content("hello"), "e2e", SamplingConfig())
    assert next(stream) == "turn 1: "
    stream.close()  # what Gradio's Stop does to the generator
    assert conv.messages[-1] == {"role": "assistant", "content": "turn 1: "}


def test_read_aloud_speaks_the_answer():
    from app.chat import read_aloud

    rate, samples = read_aloud("The capital of France is Paris.")
    assert rate == 16000 and samples.dtype == np.int16 and len(samples) > rate and np.abs(samples).max() > 1000
    assert read_aloud("   ") is None


def test_the_chat_windows_media_copies_are_pruned_by_age_then_size(tmp_path, monkeypatch):
    import os

    import app.chat as chat

    now = 1_000_000.0
    for name, age_h, size in [("old.wav", 30, 10), ("a.jpg", 3, 400), ("b.jpg", 2, 400), ("c.wav", 1, 400)]:
        f = tmp_path / name
        f.write_bytes(b"x" * size)
        os.utime(f, (now - age_h * 3600, now - age_h * 3600))
    monkeypatch.setattr(chat, "MEDIA_KEEP_BYTES", 1000)
    assert chat.prune_media(tmp_path, now) == 2  # the day-old copy, then the oldest while over 1,000 bytes
    assert sorted(f.name for f in tmp_path.iterdir()) == ["b.jpg", "c.wav"]
    assert chat.prune_media(tmp_path, now) == 0 and chat.prune_media(tmp_path / "none", now) == 0
