"""The combined model: two towers, two projectors, one decoder, in the order data meets them.

Shape letters: L prompt length, D decoder width, V vocabulary, n tokens of one image or clip.

Images and clips are encoded and projected first, so their token counts are known; the prompt is
then built with exactly that many placeholders per item, embedded, and the projected features are
scattered into the placeholder positions. A count mismatch is a bug and raises.

The model computes and holds no serving state: the decode engine, its batcher and the media cache
belong to the runtime that serves it (fusion/runtime/serving.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer

from encoders.audio import AudioTower
from encoders.errors import InputError, Stop, check
from encoders.faces import FaceDetector
from encoders.hand_tracking import HandTracker
from encoders.scene import PhotoFacts, photo_facts
from encoders.vision import VisionTower, short_name, top_classes
from fusion.photo_text import photo_text
from fusion.projectors import (AudioProjector, AudioProjectorConfig, CTCReadout, TextReadout, embedding_rms,
                               VisionProjector, VisionProjectorConfig)
from fusion.prompt import Audio, Image, build_prompt_ids, media_parts
from fusion.readout_lm import TokenTrigram
from fusion.gguf_decoder import GGUFDecoder

log = logging.getLogger(__name__)
# SmolLM2's vocabulary keeps StarCoder's special tokens; two it never emits in chat stand in for media.
DEFAULT_IMAGE_TOKEN = "<jupyter_code>"
DEFAULT_AUDIO_TOKEN = "<jupyter_output>"
NOTHING_HEARD = " (no words heard)"  # what the decoder reads when the CTC readout reads no word in a clip

# "labels": while no trained vision projector is loaded and the tower has an ImageNet head, an image becomes
# the decoder's embeddings of what the encoders know about it (fusion/photo_text.py, TextReadout);
# "learned": always the learned projector on the patch features
VisionReadout = Literal["labels", "learned"]


@dataclass
class OmniConfig:
    audio_stack: int = 8
    vision_merge: int = 1  # patches merged m x m before the projector (2: Qwen2-VL's merge)
    vision_queries: int = 8  # a resampler: 8 image tokens, each reading the whole image; 0: one per patch
    vision_hidden: int = 1024
    vision_readout: VisionReadout = "labels"
    projector_hidden: int = 768  # the audio projector's H (a trained file brings its own)
    image_token: str = DEFAULT_IMAGE_TOKEN
    audio_token: str = DEFAULT_AUDIO_TOKEN
    audio_pad_to_window: bool = False  # True: Whisper's 30 s padding (slower; see README)


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


VisionOutputs = tuple[torch.Tensor, torch.Tensor | None]  # patch features (1, N, Dv), ImageNet logits (1, C)


class OmniModel(nn.Module):
    def __init__(self, config: OmniConfig, decoder, tokenizer, audio_tower: AudioTower, vision_tower: VisionTower,
                 face_detector: FaceDetector | None = None, hand_tracker: HandTracker | None = None):
        super().__init__()
        self.config = config
        self.decoder = decoder
        self.tokenizer = tokenizer
        self.audio_tower = audio_tower
        self.vision_tower = vision_tower
        self.face_detector = face_detector  # people, for the photo facts (optional)
        self.hand_tracker = hand_tracker  # hands and their gestures, for the photo facts (optional)
        d = decoder.get_input_embeddings().embedding_dim
        self.audio_projector = AudioProjector(AudioProjectorConfig(audio_tower.feature_dim, d, config.audio_stack,
                                                                   config.projector_hidden))
        self.vision_projector = VisionProjector(VisionProjectorConfig(vision_tower.feature_dim, d, config.vision_merge,
                                                                      config.vision_hidden, config.vision_queries))
        # Start the audio tokens at the loudness of the decoder's own token embeddings (median RMS),
        # not at RMSNorm's unit scale: SmolLM2's embeddings have RMS ~0.13, and 7x louder inputs
        # would take a small learning rate most of a run to undo.
        with torch.no_grad():
            self.audio_projector.ln_post.weight.fill_(embedding_rms(decoder.get_input_embeddings()))
        # a CTC readout after the audio projector (CTCReadout), present when trained weights bring one
        self.audio_readout: CTCReadout | None = None
        # the text readout of what the encoders know about a photo (no weights)
        self.text_readout = TextReadout(self._tokenize, decoder.get_input_embeddings()) if vision_tower.num_classes else None
        self._labels: list[str] | None = None  # the tower's class names, read once
        self.trained: set[str] = set()  # which projectors carry trained weights
        self.projectors_loaded = 0  # how many times trained weights were loaded
        self.placeholder_ids = {Image: self._token_id(config.image_token), Audio: self._token_id(config.audio_token)}
        eos = {tokenizer.eos_token_id, *([decoder.config.eos_token_id] if isinstance(decoder.config.eos_token_id, int)
                                         else decoder.config.eos_token_id or [])}
        im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")  # ChatML's end of turn
        self.eos_ids = {i for i in eos | {im_end} if isinstance(i, int) and i != tokenizer.unk_token_id}

    def _token_id(self, token: str) -> int:
        i = self.tokenizer.convert_tokens_to_ids(token)
        if i is None or i == self.tokenizer.unk_token_id:
            raise ValueError(f"placeholder {token!r} is not a single token of this tokenizer")
        return i

    def _tokenize(self, text: str) -> list[int]:
        return self.tokenizer(" " + text, add_special_tokens=False)["input_ids"]

    @property
    def device(self) -> torch.device:
        return self.decoder.device

    # -- trained projector weights -----------------------------------------------------------
    def load_projectors(self, path: str | Path) -> None:
        """A projector file: "audio.*" (with "audio.readout.*" when it brings a CTC readout, and
        "audio.readout_lm.*" when that has a language model) and/or "vision.*" weights; a projector the
        file lacks keeps its initialisation."""
        state = load_file(str(path))
        audio = {k.removeprefix("audio."): v for k, v in state.items() if k.startswith("audio.")}
        vision = {k.removeprefix("vision."): v for k, v in state.items() if k.startswith("vision.")}
        if not audio and not vision:
            raise ValueError(f"{path} holds no audio.* or vision.* projector weights")
        if audio:
            readout = {k.removeprefix("readout."): v for k, v in audio.items() if k.startswith("readout.")}
            lm = {k.removeprefix("readout_lm."): v for k, v in audio.items() if k.startswith("readout_lm.")}
            self._audio_projector_at_width(audio["linear_1.weight"].shape[0])
            self.audio_projector.load_state_dict({k: v for k, v in audio.items() if not k.startswith("readout")})
            self.audio_readout = None
            if readout:
                self.new_audio_readout(readout["vocab"]).load_state_dict(readout)
                self.audio_readout.lm = TokenTrigram.from_tensors(lm) if lm else None
        if vision:
            self.vision_projector.load_state_dict(vision)
        self.trained = {name for name, part in (("audio", audio), ("vision", vision)) if part}
        self.projectors_loaded += 1  # tokens projected before are stale (fusion/runtime/serving.py)

    def new_audio_readout(self, vocab: torch.Tensor) -> CTCReadout:
        """Attach an untrained CTC readout over these decoder token ids (training starts here; loading
        a file that has one fills it in)."""
        p = next(self.audio_projector.parameters())
        self.audio_readout = CTCReadout(vocab, self.decoder.get_input_embeddings()).to(p.device, p.dtype)
        return self.audio_readout

    def _audio_projector_at_width(self, hidden: int) -> None:
        """Rebuild the audio projector at a trained one's hidden width (a file from a run with another
        `projector_hidden`) when the configured width differs."""
        c = self.audio_projector.config
        if hidden != c.hidden:
            log.info("audio projector: hidden width %d from the weights (configured %d)", hidden, c.hidden)
            p = next(self.audio_projector.parameters())
            self.audio_projector = AudioProjector(replace(c, hidden=hidden)).to(p.device, p.dtype)

    # -- media -> projected tokens ---------------------------------------------------------
    @torch.inference_mode()
    def vision_outputs(self, image: Image) -> VisionOutputs:
        """The vision tower on one image: (patch features (1, N, Dv), ImageNet logits (1, C) or None)."""
        return self.vision_tower(self.vision_tower.pixels([image.pixels]))

    def image_tokens(self, image: Image, outputs: VisionOutputs | None = None,
                     facts: Callable[[], PhotoFacts] | None = None) -> torch.Tensor:
        """One image -> (n, D) decoder-space tokens. `outputs`: its tower outputs when already computed;
        `facts`: where to get its PhotoFacts (a cache) when the text readout needs them."""
        outputs = outputs if outputs is not None else self.vision_outputs(image)
        readout = self.photo_readout()
        if readout is not None and outputs[1] is not None:
            return readout(photo_text(facts() if facts is not None else self.photo_facts(image, outputs)))
        return self.vision_projector(outputs[0][0], self.vision_tower.grid)

    def photo_readout(self) -> TextReadout | None:
        """The text readout, when the config asks for it and no trained vision projector is loaded."""
        if self.config.vision_readout != "labels" or "vision" in self.trained:
            return None
        return self.text_readout

    def photo_facts(self, image: Image, outputs: VisionOutputs | None = None) -> PhotoFacts:
        """What the encoders know about a photo: the tower's top classes, where the top one is and its
        colours (from the class activation map), the background's, the faces and hands found."""
        feats, logits = outputs if outputs is not None else self.vision_outputs(image)
        if logits is None:
            raise InputError("this vision tower has no classification head")
        classes = [(short_name(label), p) for label, p in top_classes(logits[0], self.labels(), 3)]
        cam = self.vision_tower.class_map(feats[0], int(logits[0].argmax()))
        crop, box = self.vision_tower.crop(image.pixels)
        hands = self.hand_tracker.fresh()(image.pixels) if self.hand_tracker is not None else []
        return photo_facts(classes, cam, crop, box, image.pixels.shape[:2], self.count_people(image.pixels), hands)

    def labels(self) -> list[str]:
        if self._labels is None:
            self._labels = self.vision_tower.labels()
        return self._labels

    def count_people(self, pixels: np.ndarray) -> int:
        """Faces the face detector finds in an RGB image (0 without a detector)."""
        return len(self.face_detector(pixels)) if self.face_detector is not None else 0

    def audio_tokens(self, audio: Audio, ids: list[int] | None = None, stop: Stop | None = None) -> torch.Tensor:
        """One clip -> (n, D): the projected windows; with a CTC readout, the decoder's embeddings of the
        words read from them (`ids`: readout_ids(audio) when the caller has them). `stop`: see
        encoders.errors.Interrupted."""
        if self.audio_readout is None:
            return self._projected_audio(audio, stop)
        ids = (ids if ids is not None else self.readout_ids(audio, stop)) or self.tokenizer.encode(NOTHING_HEARD,
                                                                                            add_special_tokens=False)
        return self.decoder.get_input_embeddings()(torch.tensor(ids, device=self.device))

    @torch.inference_mode()
    def readout_ids(self, audio: Audio, stop: Stop | None = None) -> list[int] | None:
        """The decoder token ids the CTC readout reads in a clip (None without a readout)."""
        if self.audio_readout is None:
            return None
        projected = self._projected_audio(audio, stop)
        check(stop)
        return self.audio_readout.token_ids(projected)

    def audio_words(self, audio: Audio, ids: list[int] | None = None) -> str | None:
        """What the CTC readout reads in a clip, as text (None without a readout): the words the decoder
        is given on the end-to-end path (`ids`: readout_ids(audio) when the caller has them)."""
        ids = ids if ids is not None else self.readout_ids(audio)
        return None if ids is None else self.tokenizer.decode(ids)

    def _projected_audio(self, audio: Audio, stop: Stop | None = None) -> torch.Tensor:
        """(n, D): each 30 s window projected on its own, joined in time order."""
        windows = self.audio_tower.encode(audio.wave, self.config.audio_pad_to_window, stop)
        return torch.cat([self.audio_projector(w) for w in windows])

    def media_tokens(self, part: Image | Audio) -> torch.Tensor:
        """Projected tokens of one image or clip."""
        return self.image_tokens(part) if isinstance(part, Image) else self.audio_tokens(part)

    # -- the conversation ------------------------------------------------------------------
    def embed_conversation(self, messages: list[dict], tokens: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Conversation -> (1, L, D) input embeddings with every image and clip spliced in. tokens: the
        media's projected tokens in order of appearance, when the caller has them (a runtime's cache)."""
        media = media_parts(messages)
        tokens = tokens if tokens is not None else [self.media_tokens(m) for m in media]
        prompt = build_prompt_ids(self.tokenizer, messages, [t.shape[0] for t in tokens], self.placeholder_ids)
        ids = torch.tensor(prompt.ids, device=self.device)
        embeds = self.decoder.get_input_embeddings()(ids)
        features = {}
        for kind in (Image, Audio):
            rows = [t for t, m in zip(tokens, media) if isinstance(m, kind)]
            if rows:
                features[self.placeholder_ids[kind]] = torch.cat(rows)
        return splice(embeds, ids, features)[None]

    def forward(self, messages: list[dict]) -> torch.Tensor:
        """Conversation -> (1, L, V) next-token logits at every position: embed, splice, decode."""
        return self.decoder(inputs_embeds=self.embed_conversation(messages)).logits


def load_omni(decoder_path: str | Path, audio_tower: AudioTower, vision_tower: VisionTower,
              config: OmniConfig | None = None, projectors: str | Path | None = None,
              dtype: torch.dtype = torch.float32, device: str = "cpu", seed: int = 0,
              face_detector: FaceDetector | None = None, weights: Literal["hf", "gguf"] = "hf",
              hand_tracker: HandTracker | None = None,
              tokenizer_dir: str | Path | None = None) -> OmniModel:
    """Assemble the model around loaded towers. Untrained projectors start from `seed`. weights "hf": a
    transformers checkpoint folder; "gguf": a GGUF file kept quantized (fusion/runtime/quant_engine.py),
    its tokenizer in `tokenizer_dir`."""
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir or decoder_path))
    if weights == "gguf":
        if device != "cpu" or dtype != torch.float32:
            raise ValueError("a GGUF decoder runs on the CPU's quantized kernels (device cpu, float32 activations)")
        decoder = GGUFDecoder(decoder_path)
    else:
        decoder = AutoModelForCausalLM.from_pretrained(str(decoder_path), dtype=dtype).eval()
    model = OmniModel(config or OmniConfig(), decoder, tokenizer, audio_tower, vision_tower, face_detector, hand_tracker)
    if projectors:
        model.load_projectors(projectors)
    return model.to(device=device, dtype=dtype).eval()
