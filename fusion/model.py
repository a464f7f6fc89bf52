"""The combined model: two towers, two projectors, one decoder.

Shape letters: L prompt length, D decoder width, n tokens of one image or clip.

Images and clips are encoded and projected first, so their token counts are known; the prompt is
then built with exactly that many placeholders per item, embedded, and the projected features are
scattered into the placeholder positions. A count mismatch is a bug and raises.
"""

from __future__ import annotations

import logging

from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from encoders.audio import AudioTower
from encoders.faces import FaceDetector
from encoders.vision import VisionTower, short_name
from fusion.cache import ObjectCache
from fusion.projectors import (AudioProjector, AudioProjectorConfig, CTCReadout, LabelTokenProjector,
                               VisionProjector, VisionProjectorConfig)
from fusion.prompt import Audio, Image, build_prompt_ids, media_parts

# SmolLM2's vocabulary keeps StarCoder's special tokens; two it never emits in chat stand in for media.
log = logging.getLogger(__name__)
DEFAULT_IMAGE_TOKEN = "<jupyter_code>"
DEFAULT_AUDIO_TOKEN = "<jupyter_output>"
MEDIA_CACHE_SIZE = 64  # entries: an image's tower outputs and its tokens are one each
NOTHING_HEARD = " (no words heard)"  # what the decoder reads when the CTC readout reads no word in a clip


@dataclass
class OmniConfig:
    audio_stack: int = 8
    vision_merge: int = 1  # patches merged m x m before the projector (2: Qwen2-VL's merge)
    vision_queries: int = 8  # a resampler: 8 image tokens, each reading the whole image; 0: one per patch
    vision_hidden: int = 1024
    # "labels": while no trained vision projector is loaded and the tower has an ImageNet head, an image
    # becomes the decoder's embeddings of label_phrase with the head's top class name (LabelTokenProjector);
    # "learned": always the learned projector on the patch features
    vision_readout: str = "labels"
    label_phrase: str = " a photo of a {}"
    # the same when a face detector (OmniModel.face_detector) finds one person, or more, in the image
    people_phrases: tuple[str, str] = (" a photo of a person. There is also a {}",
                                       " a photo of people. There is also a {}")
    projector_hidden: int = 768  # the audio projector's H (a trained file brings its own)
    image_token: str = DEFAULT_IMAGE_TOKEN
    audio_token: str = DEFAULT_AUDIO_TOKEN
    audio_pad_to_window: bool = False  # True: Whisper's 30 s padding (slower; see README)
    # "static": generate with fusion.runtime.engine (static KV cache, repacked weights; Llama-style decoders),
    # "hf": transformers' forward per token
    decode_engine: str = "static"
    engine_max_len: int = 2048
    # the static engine's decode weights: "fp16" (float16 copies through the C++ kernel of fusion.runtime.cpu_ops,
    # ~2.4x faster on a CPU; greedy text identical on the tested prompts), "fp32" (exact), "auto" (fp16
    # where the C++ ops build)
    engine_decode_weights: str = "auto"
    # conversations decoded together (fusion.runtime.batching): each has its own cache slot of engine_max_len
    engine_slots: int = 4


def splice(embeds: torch.Tensor, ids: torch.Tensor, features: dict[int, torch.Tensor]) -> torch.Tensor:
    """Put features[t] (n, D) at the n positions where ids == t, in order. (L, D), (L,) -> (L, D)."""
    out = embeds.clone()
    for token_id, feats in features.items():
        mask = ids == token_id
        n = int(mask.sum())
        if n != feats.shape[0]:
            raise ValueError(f"{n} placeholder positions for token {token_id} but {feats.shape[0]} feature rows")
        out[mask] = feats.to(out.dtype)
    return out


class OmniModel(nn.Module):
    def __init__(self, config: OmniConfig, decoder, tokenizer, audio_tower: AudioTower, vision_tower: VisionTower,
                 face_detector: FaceDetector | None = None):
        super().__init__()
        self.config = config
        self.decoder = decoder
        self.tokenizer = tokenizer
        self.audio_tower = audio_tower
        self.vision_tower = vision_tower
        self.face_detector = face_detector  # people, for the label readout and the cascade (optional)
        d = decoder.get_input_embeddings().embedding_dim
        self.audio_projector = AudioProjector(AudioProjectorConfig(audio_tower.feature_dim, d, config.audio_stack,
                                                                   config.projector_hidden))
        self.vision_projector = VisionProjector(VisionProjectorConfig(vision_tower.feature_dim, d, config.vision_merge,
                                                                      config.vision_hidden, config.vision_queries))
        # Start the audio tokens at the loudness of the decoder's own token embeddings (median RMS),
        # not at RMSNorm's unit scale: SmolLM2's embeddings have RMS ~0.13, and 7x louder inputs
        # would take a small learning rate most of a run to undo.
        with torch.no_grad():
            rms = decoder.get_input_embeddings().weight.float().pow(2).mean(-1).sqrt().median()
            self.audio_projector.ln_post.weight.fill_(float(rms))
        # a CTC readout after the audio projector (CTCReadout), present when trained weights bring one
        self.audio_readout: CTCReadout | None = None
        self.trained: set[str] = set()  # which projectors carry trained weights
        self._lazy: dict[str, object] = {}  # built lazily (label readout, decode engine); not submodules
        # Projected tokens of media already seen, and the vision tower's outputs (the safety gate reads
        # its classes before the image is projected), by object (fusion.cache)
        self._media_cache = ObjectCache(MEDIA_CACHE_SIZE)
        self.placeholder_ids = {Image: self._token_id(config.image_token), Audio: self._token_id(config.audio_token)}
        eos = {tokenizer.eos_token_id, *([decoder.config.eos_token_id] if isinstance(decoder.config.eos_token_id, int)
                                         else decoder.config.eos_token_id or [])}
        im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")  # ChatML's end of turn
        self.eos_ids = {i for i in eos | {im_end} if isinstance(i, int) and i != tokenizer.unk_token_id}

    def engine(self):
        """The static-cache decode engine over this decoder (built on first use), or None for "hf" or a
        decoder it does not handle. Callers serialise generation (the Assistant's lock): one cache."""
        if self.config.decode_engine != "static":
            return None
        if "engine" not in self._lazy:
            from fusion.runtime.engine import StaticEngine

            try:
                self._lazy["engine"] = StaticEngine(self.decoder, self.config.engine_max_len,
                                                     decode_weights=self.config.engine_decode_weights,
                                                     slots=self.config.engine_slots)
            except ValueError as err:
                log.info("decode engine: transformers forward (%s)", err)
                self._lazy["engine"] = None
        return self._lazy["engine"]

    def batcher(self):
        """The continuous batcher over engine() (fusion.runtime.batching), or None without an engine. While
        it generates, its worker thread owns the engine's caches: use engine() directly only when no
        generation through the batcher is running."""
        engine = self.engine()
        if engine is None:
            return None
        if "batcher" not in self._lazy:
            from fusion.runtime.batching import Batcher

            self._lazy["batcher"] = Batcher(engine, self.eos_ids)
        return self._lazy["batcher"]

    def _token_id(self, token: str) -> int:
        i = self.tokenizer.convert_tokens_to_ids(token)
        if i is None or i == self.tokenizer.unk_token_id:
            raise ValueError(f"placeholder {token!r} is not a single token of this tokenizer")
        return i

    @property
    def device(self) -> torch.device:
        return self.decoder.device

    def load_projectors(self, path: str | Path) -> None:
        from safetensors.torch import load_file

        state = load_file(str(path))
        loaded = []
        for prefix, module in (("audio.", self.audio_projector), ("vision.", self.vision_projector)):
            part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if prefix == "audio." and "linear_1.weight" in part:
                module = self._audio_projector_like(part)
                self.audio_readout = None
                if "readout.vocab" in part:
                    self.new_audio_readout(part["readout.vocab"])
            if part:  # a file may hold one trained projector; the other keeps its initialisation
                if prefix == "audio." and self.audio_readout is not None:
                    self.audio_readout.load_state_dict({k.removeprefix("readout."): v for k, v in part.items() if k.startswith("readout.")})
                part = {k: v for k, v in part.items() if not k.startswith("readout.")}
                module.load_state_dict(part, strict=True)
                loaded.append(prefix[:-1])
        if not loaded:
            raise ValueError(f"{path} holds no audio.* or vision.* projector weights")
        self.trained = set(loaded)
        self._media_cache.clear()

    def new_audio_readout(self, vocab: torch.Tensor) -> CTCReadout:
        """Attach an untrained CTC readout over these decoder token ids (training starts here; loading
        a file that has one fills it in)."""
        p = next(self.audio_projector.parameters())
        self.audio_readout = CTCReadout(vocab, self.decoder.get_input_embeddings()).to(p.device, p.dtype)
        return self.audio_readout

    def _audio_projector_like(self, state: dict[str, torch.Tensor]) -> AudioProjector:
        """The audio projector, rebuilt at the hidden width of a trained one's weights (a file from a run
        with another `projector_hidden`) when the configured width differs."""
        c = self.audio_projector.config
        hidden = state["linear_1.weight"].shape[0]
        if hidden != c.hidden:
            log.info("audio projector: hidden width %d from the weights (configured %d)", hidden, c.hidden)
            p = next(self.audio_projector.parameters())
            self.audio_projector = AudioProjector(replace(c, hidden=hidden)).to(p.device, p.dtype)
        return self.audio_projector

    # -- media -> projected tokens ---------------------------------------------------------
    @torch.inference_mode()
    def vision_outputs(self, image: Image) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The vision tower on one image: (patch features (1, N, Dv), ImageNet logits (1, C) or None),
        computed once per image object."""
        return self._media_cache.get(image, lambda: self.vision_tower(self.vision_tower.pixels([image.pixels])),
                                     "tower")

    def image_tokens(self, image: Image) -> torch.Tensor:
        """One image -> (n, D) decoder-space tokens."""
        feats, logits = self.vision_outputs(image)
        labels = self.label_projector()
        if labels is not None and logits is not None:
            return labels(logits[0], self.count_people(image.pixels))
        return self.vision_projector(feats[0], self.vision_tower.grid)

    def label_projector(self) -> LabelTokenProjector | None:
        """The label-token readout, when the config asks for it and no trained vision projector is loaded
        (built on first use: one tokenizer call per class name)."""
        if self.config.vision_readout != "labels" or "vision" in self.trained or self.vision_tower.num_classes == 0:
            return None
        if "labels" not in self._lazy:
            names = [short_name(label) for label in self.vision_tower.labels()]
            templates = (self.config.label_phrase, *self.config.people_phrases)

            def phrase_ids(cls: int, people: int) -> list[int]:
                return self.tokenizer(templates[people].format(names[cls]), add_special_tokens=False)["input_ids"]

            self._lazy["labels"] = LabelTokenProjector(phrase_ids, self.decoder.get_input_embeddings())
        return self._lazy["labels"]

    def count_people(self, pixels: np.ndarray) -> int:
        """Faces the face detector finds in an RGB image (0 without a detector)."""
        return len(self.face_detector(pixels)) if self.face_detector is not None else 0

    def audio_tokens(self, audio: Audio) -> torch.Tensor:
        """One clip -> (n, D): the projected windows; with a CTC readout, the decoder's embeddings of the
        words read from them."""
        tokens = self._projected_audio(audio)
        if self.audio_readout is None:
            return tokens
        ids = self.audio_readout.token_ids(tokens) or self.tokenizer.encode(NOTHING_HEARD, add_special_tokens=False)
        return self.decoder.get_input_embeddings()(torch.tensor(ids, device=tokens.device))

    @torch.inference_mode()
    def audio_words(self, audio: Audio) -> str | None:
        """What the CTC readout reads in a clip, as text (None without a readout): the words the decoder
        is given on the end-to-end path."""
        if self.audio_readout is None:
            return None
        return self.tokenizer.decode(self.audio_readout.token_ids(self._projected_audio(audio)))

    def _projected_audio(self, audio: Audio) -> torch.Tensor:
        """(n, D): each 30 s window projected on its own, joined in time order."""
        windows = self.audio_tower.encode(audio.wave, self.config.audio_pad_to_window)
        return torch.cat([self.audio_projector(w) for w in windows])

    def media_tokens(self, part: Image | Audio) -> torch.Tensor:
        """Projected tokens of one image or clip, computed once per object (inference only)."""

        @torch.inference_mode()
        def compute() -> torch.Tensor:
            return self.image_tokens(part) if isinstance(part, Image) else self.audio_tokens(part)

        return self._media_cache.get(part, compute, "tokens")

    def embed_conversation(self, messages: list[dict]) -> torch.Tensor:
        """Conversation -> (1, L, D) input embeddings with every image and clip spliced in."""
        media = media_parts(messages)
        tokens = [self.media_tokens(m) for m in media]
        prompt = build_prompt_ids(self.tokenizer, messages, [t.shape[0] for t in tokens], self.placeholder_ids)
        ids = torch.tensor(prompt.ids, device=self.device)
        embeds = self.decoder.get_input_embeddings()(ids)
        features = {}
        for kind in (Image, Audio):
            rows = [t for t, m in zip(tokens, media) if isinstance(m, kind)]
            if rows:
                features[self.placeholder_ids[kind]] = torch.cat(rows)
        return splice(embeds, ids, features)[None]


def load_omni(decoder_dir: str | Path, audio_tower: AudioTower, vision_tower: VisionTower,
              config: OmniConfig | None = None, projectors: str | Path | None = None,
              dtype: torch.dtype = torch.float32, device: str = "cpu", seed: int = 0,
              face_detector: FaceDetector | None = None) -> OmniModel:
    """Assemble the model around loaded towers. Untrained projectors start from `seed`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(decoder_dir))
    decoder = AutoModelForCausalLM.from_pretrained(str(decoder_dir), dtype=dtype).eval()
    model = OmniModel(config or OmniConfig(), decoder, tokenizer, audio_tower, vision_tower, face_detector)
    if projectors:
        model.load_projectors(projectors)
    return model.to(device=device, dtype=dtype).eval()
