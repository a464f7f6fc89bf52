"""The UI's logic (no Gradio needed) with a fake assistant, and the page itself through gradio_client."""

import threading

import numpy as np
import pytest

from app.chat import Conversation, ModelHolder, reply, user_content
from encoders.errors import InputError
from fusion.assistant import validate_conversation
from fusion.generate import SamplingConfig
from fusion.prompt import Audio, Image


class EchoAssistant:
    """Streams back how many user turns it saw and what the last one held."""

    def chat(self, messages, mode="e2e", sampling=None, timings=None):
        validate_conversation(messages, mode)
        turns = sum(m["role"] == "user" for m in messages)
        last = messages[-1]["content"]
        kinds = [type(p).__name__ for p in last]
        yield f"turn {turns}: "
        yield " ".join(kinds)


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
    assert holder.get() == "model"

    def broken():
        raise FileNotFoundError("weights missing")

    failed = ModelHolder(broken)
    failed.wait(5)
    with pytest.raises(InputError, match="failed to load: FileNotFoundError: weights missing"):
        failed.get()


def test_the_page_answers_a_typed_message_through_gradio_client():
    from gradio_client import Client

    from app.ui import build

    holder = ModelHolder(EchoAssistant)
    holder.wait(5)
    demo = build(holder).queue()
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True)
    try:
        client = Client(url, verbose=False)
        names = [e for e in client.view_api(return_format="dict")["named_endpoints"]]
        endpoint = next(n for n in names if "on_send" in n)
        result = client.predict("hello there", None, None, "cascade", 32, 0.0, api_name=endpoint)
        chat = result[0]
        assert chat[-1]["content"] in ("turn 1: str", [{"type": "text", "text": "turn 1: str"}]) or \
            "turn 1: str" in str(chat[-1])
        assert result[2] == ""  # the textbox is cleared
    finally:
        demo.close()
