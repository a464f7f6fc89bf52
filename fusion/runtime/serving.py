"""What serving an OmniModel needs beside the model: the decode engine and its continuous batcher
(built on first use) and the cache of media already encoded. The Assistant owns one; the model
itself holds no serving state.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

import torch

from encoders.errors import Stop
from encoders.scene import PhotoFacts
from fusion.cache import ObjectCache
from fusion.gguf_decoder import GGUFDecoder
from fusion.model import OmniModel, VisionOutputs
from fusion.prompt import Audio, Image, media_parts
from fusion.runtime.batching import Batcher
from fusion.runtime.engine import StaticEngine
from fusion.runtime.quant_engine import QuantEngine

log = logging.getLogger(__name__)
MEDIA_CACHE_SIZE = 64  # entries: an image's tower outputs, facts and tokens are one each
HEARD_CACHE_SIZE = 32  # clips whose words are remembered (a listened recording's pieces are clips too)


@dataclass(frozen=True)
class RuntimeConfig:
    # "static": generate with fusion.runtime.engine (static KV cache, repacked weights; Llama-style
    # decoders); "hf": transformers' forward per token
    decode_engine: Literal["static", "hf"] = "static"
    max_len: int = 2048  # tokens per conversation in the engine's cache
    # the engine's decode weights: "fp16" (float16 copies through the C++ kernel of fusion.runtime.cpu_ops,
    # ~2.4x faster on a CPU; greedy text identical on the tested prompts), "fp32" (exact), "auto" (fp16
    # where the C++ ops build)
    decode_weights: Literal["auto", "fp16", "fp32"] = "auto"
    slots: int = 4  # conversations decoded together (fusion.runtime.batching), one cache slot each


class Runtime:
    def __init__(self, model: OmniModel, config: RuntimeConfig | None = None):
        self.model = model
        self.config = config or RuntimeConfig()
        # Projected tokens of media already seen, and the vision tower's outputs (the safety gate reads
        # its classes before the image is projected), by object: a conversation carries the same
        # Image/Audio objects every turn, and re-running the towers on them would be wasted.
        self.media_cache = ObjectCache(MEDIA_CACHE_SIZE)
        # The words heard in a clip, by object and path ("readout": the CTC readout's ids, "whisper": the
        # transcriber's text, kept by the Assistant): a conversation carries its clips every turn, and the
        # safety gate (app/safety.py) reads them before the answer does. Apart from the media, so the pieces
        # of a recording being listened to do not push a conversation's photos out.
        self.heard = ObjectCache(HEARD_CACHE_SIZE)
        self._engine: StaticEngine | None = None
        self._batcher: Batcher | None = None
        self._engine_tried = False

    def engine(self) -> StaticEngine | None:
        """The static-cache decode engine over the model's decoder (built on first use; QuantEngine for
        a GGUF decoder), or None for "hf" or a decoder it does not handle. Callers serialise its use (the Assistant's lock)."""
        c = self.config
        if c.decode_engine != "static":
            return None
        if not self._engine_tried:
            self._engine_tried = True
            decoder = self.model.decoder
            if isinstance(decoder, GGUFDecoder):  # no transformers model to fall back on: errors surface
                self._engine = QuantEngine(decoder, c.max_len, slots=c.slots)
                return self._engine
            try:
                self._engine = StaticEngine(decoder, c.max_len, decode_weights=c.decode_weights, slots=c.slots)
            except ValueError as err:
                log.info("decode engine: transformers forward (%s)", err)
        return self._engine

    def context_length(self) -> int:
        """Tokens a conversation can hold, prompt and answer together: the decoder's trained context,
        capped at the engine's cache for a GGUF decoder (it has no transformers forward to go past it)."""
        trained = int(getattr(self.model.decoder.config, "max_position_embeddings", 2048))
        return min(trained, self.config.max_len) if isinstance(self.model.decoder, GGUFDecoder) else trained

    def batcher(self) -> Batcher | None:
        """The continuous batcher over engine() (fusion.runtime.batching), or None without an engine.
        While it generates, its worker thread owns the engine's caches: use engine() directly only
        when no generation through the batcher is running."""
        engine = self.engine()
        if engine is not None and self._batcher is None:
            self._batcher = Batcher(engine, self.model.eos_ids)
        return self._batcher

    def answering(self) -> bool:
        """An answer waits for the decoder or is being prefilled (Batcher.answering)."""
        return self._batcher is not None and self._batcher.answering()

    def forget_conversations(self) -> None:
        """Every cache slot keeps only the system prompt and the user turn's start, as a server that has
        answered other questions holds (benchmarks and tests: no trial reuses another's words). Waits for
        the batcher to be idle."""
        batcher, engine = self.batcher(), self.engine()
        if engine is None:
            return
        while not batcher.idle():
            time.sleep(0.01)
        start = self.embed([{"role": "user", "content": ""}])
        for slot in range(engine.slots):
            engine.reset(slot)
            engine.prefill(start, slot)

    def vision_outputs(self, image: Image) -> VisionOutputs:
        return self.media_cache.get(image, lambda: self.model.vision_outputs(image), "tower")

    def photo_facts(self, image: Image) -> PhotoFacts:
        return self.media_cache.get(image, lambda: self.model.photo_facts(image, self.vision_outputs(image)), "facts")

    def media_tokens(self, part, stop: Stop | None = None) -> torch.Tensor:
        """Projected tokens of one image or clip, computed once per object (inference only). `stop`:
        asked during a clip's hearing (encoders.errors.Interrupted)."""

        @torch.inference_mode()
        def compute() -> torch.Tensor:
            if isinstance(part, Image):
                return self.model.image_tokens(part, self.vision_outputs(part), lambda: self.photo_facts(part))
            return self.model.audio_tokens(part, self.readout_ids(part, stop), stop)

        if isinstance(part, Audio) and self.model.audio_readout is not None:
            return compute()  # an embedding lookup of the cached reading: one cache entry per clip, not two
        return self.media_cache.get(part, compute, ("tokens", self.model.projectors_loaded))

    def readout_ids(self, clip: Audio, stop: Stop | None = None) -> list[int] | None:
        """The CTC readout's token ids for a clip (None without a readout), read once per object: the
        e2e path embeds them and shows them as the words heard."""
        tag = ("readout", self.model.projectors_loaded)
        return self.heard.get(clip, lambda: self.model.readout_ids(clip, stop), tag)

    def embed(self, messages: list[dict], stop: Stop | None = None) -> torch.Tensor:
        """The model's embed_conversation with each image and clip encoded once."""
        return self.model.embed_conversation(messages, [self.media_tokens(p, stop) for p in media_parts(messages)])
