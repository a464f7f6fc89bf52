"""Shared fixtures: tiny random models built from configs (no downloads), and the real default weights."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

# The tiny preset for every test (and every process a test starts) unless a test names another: the few
# that need a Qwen decoder say why.
os.environ.setdefault("POCKET_OMNI_MODEL", "smollm-135m")

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<jupyter_code>", "<jupyter_output>", "<unk>"]
WORDS = ("user assistant system what is in this picture and that sound describe both the cat a dog hello "
         "world please say it again red green blue one two three").split()


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", additional_special_tokens=SPECIALS[:5])
    fast.chat_template = CHATML
    return fast


@pytest.fixture(scope="session")
def tiny_decoder(tiny_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, eos_token_id=tiny_tokenizer.eos_token_id,
                         initializer_range=0.3,  # logits wide enough for a projector to steer them
                         bos_token_id=None, pad_token_id=tiny_tokenizer.pad_token_id)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tiny_whisper_config():
    from transformers import WhisperConfig

    return WhisperConfig(vocab_size=64, d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                         decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80,
                         max_source_positions=1500, max_target_positions=64,
                         pad_token_id=0, bos_token_id=1, eos_token_id=1, decoder_start_token_id=2)


@pytest.fixture(scope="session")
def tiny_audio_tower(tiny_whisper_config):
    from transformers import WhisperModel

    from encoders.audio import AudioTower

    torch.manual_seed(0)
    return AudioTower(WhisperModel(tiny_whisper_config).encoder.eval())


@pytest.fixture(scope="session")
def tiny_omni(tiny_tokenizer, tiny_decoder, tiny_audio_tower):
    from encoders.vision import VisionConfig, VisionTower
    from fusion.model import OmniConfig, OmniModel

    torch.manual_seed(0)
    return OmniModel(OmniConfig(projector_hidden=64, vision_hidden=64), tiny_decoder, tiny_tokenizer, tiny_audio_tower,
                     VisionTower(VisionConfig("test_efficientnet"))).eval()


# -- real media and weights ---------------------------------------------------------------------

@pytest.fixture(scope="session")
def default_weights():
    from fusion.weights.default import ensure_default_weights

    return ensure_default_weights()


@pytest.fixture(scope="session")
def assistant(default_weights):
    from fusion.assistant import Assistant

    return Assistant.load_default()


def espeak(text: str, path: Path, voice: str = "en-us", rate: int = 140) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed: run setup.sh")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-w", str(path), text], check=True)
    return path


def tone(seconds: float, rate: int = 16000, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def live_server(app):
    """Serve an ASGI app on a free loopback port in a thread; yields its base URL."""
    from app.api import serving_in_thread

    return serving_in_thread(app)
