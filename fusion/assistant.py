"""The one surface app/ talks to: an Assistant that chats about images, speech and text, in three
modes (fusion/modes.py: e2e, cascade, auto, each a route per medium).

The Assistant owns the model and the runtime that serves it (fusion/runtime/serving.py: the engine,
the batcher, the media cache) and serialises the towers and the transcriber with one lock.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from transformers.utils import logging as hf_logging

from encoders.asr import WhisperTranscriber
from encoders.audio import is_silent
from encoders.errors import InputError, Interrupted, Stop, check
from encoders.faces import FaceDetector
from encoders.hand_tracking import HandTracker
from encoders.vision import VisionConfig, VisionTower, top_classes
from fusion.model import OmniConfig, OmniModel, load_omni
from fusion.modes import MODES, ROUTES, Mode, Route
from fusion.photo_text import photo_text
from fusion.presets import Preset, preset
from fusion.prompt import MAX_IMAGES, Audio, Image, media_parts
from fusion.runtime import cpu_ops
from fusion.runtime.generate import SamplingConfig, Timings, generate_tokens, stream_text
from fusion.runtime.serving import Runtime, RuntimeConfig
from fusion.weights.default import ensure_default_weights

log = logging.getLogger("pocket_omni")


ASSETS = Path(__file__).resolve().parent.parent / "assets"


# positions listen() does not prefill: the turn's end (ChatML: <|im_end|> \n <|im_start|> assistant \n)
LISTEN_HOLD_BACK = 5


class Assistant:
    def __init__(self, model: OmniModel, transcriber: WhisperTranscriber, runtime: RuntimeConfig | None = None):
        self.model = model
        self.runtime = Runtime(model, runtime)
        self.transcriber = transcriber
        self.lock = threading.Lock()  # one generation at a time: the model and its caches are shared
        self._askers = 0  # chat() and heard() calls reading a turn for an answer: listen() gives way to them
        self._asking_lock = threading.Lock()
        self.preset: Preset | None = None  # which preset load_default loaded (None: assembled by hand)

    @classmethod
    def load_default(cls, device: str = "cpu", dtype: torch.dtype = torch.float32,
                     projectors: str | Path | None = None, config: OmniConfig | None = None,
                     untrained: bool = False, progress: Callable[[str], None] = lambda stage: None,
                     model: str | None = None) -> "Assistant":
        """The offline model of a preset (fusion/presets.py: `model`, else POCKET_OMNI_MODEL, else the
        default): weights fetched, verified and converted on first use. `untrained` skips the shipped
        projectors (training starts from a seeded initialisation); `progress` hears which part loads
        now (the page shows it)."""
        chosen = preset(model)
        progress(f"checking the weights of {chosen.name} (1/5; the first run fetches about "
                 f"{chosen.download_gb:.1f} GB for the decoder)")
        w = ensure_default_weights(model=chosen)
        hf_logging.disable_progress_bar()  # loading converted weights is quick; bars only clutter
        t0 = time.perf_counter()
        progress("Whisper, the audio tower and transcriber (2/5)")
        ops = cpu_ops.load() if torch.device(device).type == "cpu" else None
        # Whisper's decoder steps through the decode engine's float16 one-row product where it is built
        rows = (ops.pack_half, ops.gemv_half) if ops is not None else None
        transcriber = WhisperTranscriber.from_pretrained(w.whisper_dir, dtype=dtype, rows=rows)
        progress("the vision tower, the face detector and the hand tracker (3/5)")
        vision = VisionTower(VisionConfig(w.vision_name, str(w.vision_checkpoint)))
        shipped = ASSETS / "projectors" / chosen.projectors
        if projectors is None and shipped.exists() and not untrained:
            projectors = shipped
        if projectors is None and not untrained:
            log.warning("no projectors trained for %s: photos go in as what the encoders see, and speech only "
                        "as Whisper's transcript (e2e speech is refused)", chosen.name)
        faces = FaceDetector(w.face_detector, device=device)
        hands = HandTracker(*w.hand_models, max_hands=2, device=device)
        progress(f"the language model, {chosen.title} (4/5)")
        config = config or OmniConfig(image_token=chosen.image_token, audio_token=chosen.audio_token)
        model_ = load_omni(w.decoder, transcriber.tower, vision, config, projectors, dtype, device,
                           face_detector=faces, weights=chosen.weights, tokenizer_dir=w.tokenizer_dir,
                           hand_tracker=hands)
        transcriber.to(device)
        assistant = cls(model_, transcriber)
        assistant.preset = chosen
        progress("the decode engine (5/5)")
        assistant.runtime.batcher()  # built now rather than at the first answer
        log.info("loaded %s on %s/%s in %.1f s", chosen.name, device, dtype, time.perf_counter() - t0)
        return assistant

    # -- task helpers ------------------------------------------------------------------------
    @torch.inference_mode()
    def classify_image(self, pixels: np.ndarray, k: int = 5) -> list[tuple[str, float]]:
        """The vision tower's own head: the k most likely ImageNet classes with probabilities (a frame
        seen once, as the live camera's: nothing cached)."""
        return self._top_classes(self.model.vision_outputs(Image(pixels))[1], k)

    def image_classes(self, image: Image, k: int = 5) -> list[tuple[str, float]]:
        """classify_image for a photo of the conversation: the tower's pass is shared with the e2e path
        that projects the same image object."""
        with self.lock:
            return self._image_classes_unlocked(image, k)

    def _image_classes_unlocked(self, image: Image, k: int) -> list[tuple[str, float]]:
        return self._top_classes(self.runtime.vision_outputs(image)[1], k)

    def _top_classes(self, logits: torch.Tensor | None, k: int) -> list[tuple[str, float]]:
        if logits is None:
            raise InputError("this vision tower has no classification head")
        return top_classes(logits[0], self.model.labels(), k)

    def transcribe(self, wave: np.ndarray) -> str:
        with self.lock:
            return self.transcriber.transcribe(wave)

    def heard(self, clip: Audio, mode: Mode) -> str:
        """The words of a clip as this mode hands them to the decoder: the CTC readout's words on the e2e
        path (Whisper's transcript without a readout), Whisper's transcript otherwise. Computed once per clip.
        For an answer (the safety gate reads them first): listen() gives way."""
        with self._asking(), self.lock:
            return self._heard_unlocked(clip, mode)

    def _heard_unlocked(self, clip: Audio, mode: Mode, stop: Stop | None = None) -> str:
        if mode == "e2e" and self.model.audio_readout is not None:
            return self.model.audio_words(clip, self.runtime.readout_ids(clip, stop))  # read once, by the runtime
        return self.runtime.heard.get(clip, lambda: self.transcriber.transcribe(clip.wave, stop), "whisper")

    # -- chat ----------------------------------------------------------------------------------
    def chat(self, messages: list[dict], mode: Mode = "e2e", sampling: SamplingConfig | None = None,
             timings: Timings | None = None) -> Iterator[str]:
        """Stream the assistant's next turn as text pieces."""
        sampling = sampling or SamplingConfig()
        timings = timings if timings is not None else Timings()
        validate_conversation(messages, mode)
        route = self.route(mode)
        self._check_audio_weights(messages, route)
        t0 = time.perf_counter()
        with self._asking():  # until the batcher knows of the answer (Batcher.answering)
            with self.lock:  # the towers, the media cache and the transcriber are used one request at a time
                messages = self._as_text(messages, timings, route)
                self._note_readout(messages[-1], timings, route)
                embeds = self.runtime.embed(messages)
                self._check_length(embeds.shape[1], sampling.max_new_tokens)
                timings.encode_s = time.perf_counter() - t0
                timings.prompt_tokens = embeds.shape[1]
                batcher = self.runtime.batcher()
            fits = batcher is not None and batcher.fits(embeds.shape[1], sampling)
            # decoded beside any other conversation generating now (fusion.runtime.batching)
            tokens = batcher.generate(embeds, sampling) if fits else None
        tok = self.model.tokenizer
        if tokens is not None:
            yield from stream_text(tok, tokens, sampling.stop, timings, t0, sampling.repeat_ngram)
        else:
            with self.lock:  # transformers' forward with a dynamic cache: a long conversation, or no engine
                tokens = generate_tokens(self.model.decoder, embeds, self.model.eos_ids, sampling)
                yield from stream_text(tok, tokens, sampling.stop, timings, t0, sampling.repeat_ngram)
        timings.total_s = time.perf_counter() - t0
        timings.hit_max_tokens = timings.new_tokens >= sampling.max_new_tokens

    @contextmanager
    def _asking(self) -> Iterator[None]:
        """While an answer's words are read (the gate's reading too) and its prompt built and queued."""
        with self._asking_lock:
            self._askers += 1
        try:
            yield
        finally:
            with self._asking_lock:
                self._askers -= 1

    def _answer_asked(self) -> bool:
        """listen()'s `stop`: an answer is being encoded, or waits for the decoder or is prefilled."""
        return self._askers > 0 or self.runtime.answering()

    def listen(self, messages: list[dict], mode: Mode = "e2e", key: str = "") -> str | None:
        """While the last message's recording is still being made: do now, during the speech, what its
        answer will need. The clip so far is heard (the readout's words, or Whisper's on the cascade
        path) and the conversation with it prefilled into a cache slot, so chat() on the finished
        recording computes only the positions after the words that did not change (prefix caching; the
        tokens are those of a chat without it). Only the turn's end (LISTEN_HOLD_BACK positions) is left
        out, which follows whatever is said last; the words so far are prefilled even if the next piece reads
        its last ones differently (the answer then recomputes from the first word that changed): what is
        left for the answer is the turn's end and the words that changed (6-19 positions measured on
        `bench listen`'s questions, against ~16 cold). `key` names the recording: a newer piece replaces an
        older one still waiting. Answers come first: when chat() or heard() reads a turn for an answer, or
        the decoder is queued or prefilling one, hearing a piece stops at the next layer of the encoder (or
        token of Whisper's decoder; the readout's search, ~10 ms, is not cut), and so does its prefill.
        Returns the words heard in the last message's recordings so far (a client can show them while one
        speaks), None when nothing could be heard (silence so far, an answer on its way). Heard is not
        always prefilled: the prefill is queued only when there is an engine and more than the turn's end
        was said."""
        try:
            validate_conversation(messages, mode)
            route = self.route(mode)
            self._check_audio_weights(messages, route)
            asked = self._answer_asked
            with self.lock:
                check(asked)
                embeds = self.runtime.embed(self._as_text(messages, Timings(), route, asked), asked)
                words = self._words_read(messages[-1], route, asked)
                batcher = self.runtime.batcher()
            check(asked)
        except (InputError, Interrupted):  # too little said yet to hear anything, or an answer is on its way
            return None
        if batcher is not None and embeds.shape[1] > LISTEN_HOLD_BACK + 1:
            batcher.warm(embeds[:, :-LISTEN_HOLD_BACK], key, asked)
        return words

    def _words_read(self, message: dict, route: Route, stop: Stop) -> str:
        """The words this route read in a message's clips, as cached by the reading just done (Whisper's
        transcript, or the readout's ids on the e2e path: nothing is computed again but what the cache let go)."""
        if isinstance(message["content"], str) or (route.speech == "embeddings" and self.model.audio_readout is None):
            return ""
        mode = "cascade" if route.speech == "transcript" else "e2e"
        return " ".join(self._heard_unlocked(p, mode, stop) for p in message["content"] if isinstance(p, Audio))

    def route(self, mode: Mode) -> Route:
        """How this mode hands each medium to this decoder ("auto" follows the preset's measurements)."""
        return self.preset.auto if mode == "auto" and self.preset is not None else ROUTES[mode]

    def _check_audio_weights(self, messages: list[dict], route: Route) -> None:
        """Speech as embeddings needs an audio projector trained for this decoder: a preset without one
        (the Qwen decoders until their bridges are trained) says so instead of answering noise."""
        if route.speech != "embeddings" or self.preset is None or "audio" in self.model.trained:
            return
        if any(isinstance(p, Audio) for p in media_parts(messages)):
            raise InputError(f"{self.preset.name} has no trained audio projector yet, so e2e mode cannot hear a "
                             f"recording: use auto or cascade (Whisper transcribes it)", "audio_weights_missing")

    def _note_readout(self, message: dict, timings: Timings, route: Route) -> None:
        """On the e2e path, what the readout heard in the turn's clips (the page shows it)."""
        if route.speech == "embeddings" and self.model.audio_readout is not None and not isinstance(message["content"], str):
            for clip in (p for p in message["content"] if isinstance(p, Audio)):
                timings.notes.append(f"heard (e2e readout): {self._heard_unlocked(clip, 'e2e')}")

    @property
    def context_length(self) -> int:
        """Tokens the decoder can attend over: prompt and answer together."""
        return self.runtime.context_length()

    def _check_length(self, prompt_tokens: int, new_tokens: int) -> None:
        if prompt_tokens + new_tokens > self.context_length:
            raise InputError(f"the conversation is {prompt_tokens} tokens long; with up to {new_tokens} more for the "
                             f"answer that exceeds the model's context of {self.context_length}: shorten it or start "
                             f"a new one", "context_length_exceeded")

    def _as_text(self, messages: list[dict], timings: Timings, route: Route, stop: Stop | None = None) -> list[dict]:
        """The parts a route sends as text: a clip becomes its transcript, an image what the encoders know
        about it (fusion/photo_text.py: the same words the e2e readout embeds)."""
        if route.speech == "embeddings" and route.images == "embeddings":
            return messages
        out = []
        for m in messages:
            if isinstance(m["content"], str):
                out.append(m)
                continue
            parts = []
            for p in m["content"]:
                if isinstance(p, Audio) and route.speech == "transcript":
                    text = self._heard_unlocked(p, "cascade", stop)
                    if not text:
                        raise InputError(f"no speech could be made out in {p.name}")
                    timings.notes.append(f"heard: {text}")
                    parts.append(text)
                elif isinstance(p, Image) and route.images == "labels":
                    facts = self.runtime.photo_facts(p)
                    seen = ", ".join(f"{name} ({prob:.0%})" for name, prob in facts.classes)
                    timings.notes.append(f"saw: {seen}" + (f"; faces: {facts.faces}" if facts.faces else "")
                                         + (f"; hands: {len(facts.hands)}" if facts.hands else ""))
                    parts.append(f"[{photo_text(facts)}]")
                else:
                    parts.append(p)
            text_only = all(isinstance(p, str) for p in parts)
            out.append({"role": m["role"], "content": "\n".join(parts) if text_only else parts})
        return out


def validate_conversation(messages: list[dict], mode: Mode) -> None:
    """InputError for a conversation no mode can answer; cheap, so callers check before loading."""
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if not messages or messages[-1]["role"] != "user":
        raise InputError("the conversation must end with a user message")
    last = messages[-1]["content"]
    parts = [last] if isinstance(last, str) else last
    if not any((isinstance(p, str) and p.strip()) or isinstance(p, (Image, Audio)) for p in parts):
        raise InputError("the question is empty: type something, or add a photo or a recording")
    media = media_parts(messages)
    if sum(isinstance(p, Image) for p in media) > MAX_IMAGES:
        raise InputError(f"too many images in one conversation (limit {MAX_IMAGES}); start a new one",
                         "too_many_images")
    for p in media:
        if isinstance(p, Audio) and is_silent(p.wave):
            raise InputError(f"{p.name} is silent: no speech to answer")
