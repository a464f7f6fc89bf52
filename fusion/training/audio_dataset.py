"""The spoken training set of the audio projector: prompts (fusion/training/speech_data.py) spoken in
several voices, the Whisper tower's features cached, and the teacher's answers (what the decoder answers
to the same prompt as text), built resumably in chunks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from encoders.audio import SAMPLE_RATE, load_audio
from encoders.speech import speak
from fusion.model import OmniModel
from fusion.training import speech_data
from fusion.training.everyday_text import everyday_sentences
from fusion.training.vocabulary import english_words

MAX_TARGET_TOKENS = 20

def teacher_answers(model: OmniModel, texts: list[str], max_tokens: int = MAX_TARGET_TOKENS, batch: int = 16,
                    log=print) -> list[list[int]]:
    """Greedy answers of the frozen decoder to text prompts (the distillation targets)."""
    tok, dec = model.tokenizer, model.decoder
    out: list[list[int]] = []
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    side, tok.padding_side = tok.padding_side, "left"
    try:
        for i in range(0, len(texts), batch):
            chats = [tok.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                             add_generation_prompt=True) for t in texts[i:i + batch]]
            enc = tok(chats, return_tensors="pt", padding=True, add_special_tokens=False)
            gen = dec.generate(**enc, max_new_tokens=max_tokens, do_sample=False, pad_token_id=pad,
                               eos_token_id=sorted(model.eos_ids))
            for row in gen[:, enc["input_ids"].shape[1]:].tolist():
                ids = []
                for t in row:
                    if t in model.eos_ids or t == pad:
                        break
                    ids.append(t)
                out.append(ids)
            log(f"teacher answers: {len(out)}/{len(texts)}")
    finally:
        tok.padding_side = side
    return out


FORTUNES_ANSWERED = 600  # distill: how many fortunes also get the teacher's answer (~1 s per prompt)
BUILD_CHUNK = 250  # prompts spoken and encoded between saves: an interrupted build loses at most one chunk


def build_audio_dataset(model: OmniModel, out_dir: Path, evaluation_sentences: set[str], variants: int = 8,
                        seed: int = 0, log=print, mentions: int = 0,
                        recipe: speech_data.Recipe = speech_data.RECIPES["r3"], answers: str = "all") -> dict:
    """Speak every generated prompt in several of the recipe's voices, its fortune sentences, `mentions`
    sentences naming the prompts' entities and its everyday sentences once each, add the human
    recordings; cache Whisper features, the teacher's answers and the transcripts.

    answers "all": the teacher answers the prompts and FORTUNES_ANSWERED fortunes (the distillation
    targets); "none": no teacher (CTC trains on transcripts), and the data depend on the decoder only
    through its tokenizer.

    Resumable: the teacher's answers and every BUILD_CHUNK prompts' clips are saved in out_dir/partial as
    they are made, with the random generator's state, so a build run again after an interruption goes on
    where it stopped and ends with the same data as one that was never interrupted. meta.json is written
    last: its presence means the build is complete."""
    rng = np.random.default_rng(seed)
    templates = speech_data.prompts(seed)
    items = templates + [speech_data.Prompt(t, None, "fortune")
                         for t in speech_data.fortune_sentences(recipe.fortunes, seed)]
    items += [speech_data.Prompt(t, None, "mention") for t in speech_data.mention_sentences(mentions, seed)]
    if any(recipe.everyday):
        items += [speech_data.Prompt(t, None, "everyday")
                  for t in everyday_sentences(*recipe.everyday, english_words(20000), seed)]
    partial = out_dir / "partial"
    partial.mkdir(parents=True, exist_ok=True)
    asked = range(min(len(items), len(templates) + FORTUNES_ANSWERED)) if answers == "all" else []
    said = _cached_teacher_answers(model, [items[i].text for i in asked], partial / "answers.json", log) \
        if asked else []  # no teacher at all for a CTC build
    answers = dict(zip(asked, said))
    eos = model.tokenizer.convert_tokens_to_ids("<|im_end|>")
    clips, meta, start = _resume_chunks(partial, rng)
    if start:
        log(f"resuming the data build at prompt {start}/{len(items)} ({len(meta)} clips made)")
    add = _clip_adder(model, out_dir, clips, meta, eos)
    bar = tqdm(total=len(items), initial=start, desc="speaking and encoding", unit="prompt")
    for first in range(start, len(items), BUILD_CHUNK):
        first_clip = len(meta)
        for i in range(first, min(first + BUILD_CHUNK, len(items))):
            _speak_prompt(i, items[i], answers.get(i), add, rng, evaluation_sentences, variants, eos, recipe)
            bar.update()
        _save_chunk(partial / f"chunk{first:06d}", meta[first_clip:], clips, min(first + BUILD_CHUNK, len(items)), rng)
    bar.close()
    human = speech_data.human_recordings()
    if not human:  # the only human voice in training: say so rather than train without it unnoticed
        log(f"no human recordings: {speech_data.ASTERISK_TRANSCRIPTS} is missing (Debian's "
            f"asterisk-core-sounds-en; setup.sh installs it)")
    for wav, text in tqdm(human, desc="human recordings", unit="clip"):
        if speech_data.is_held_out_sentence(text, evaluation_sentences):
            continue  # one speaker, also in training: no held-out measure from these
        wave = load_audio(wav)
        wave = speech_data.augment(wave, rng, recipe.telephone) if rng.random() < 0.5 else wave
        add(wave, text, False, answer_key=None, kind="human", voice="asterisk", answer_ids=None)  # repeat task only
    save_file(clips, str(out_dir / "features.safetensors"))
    (out_dir / "meta.json").write_text(json.dumps(meta))
    shutil.rmtree(partial)
    summary = {"clips": len(meta), "train": sum(m["split"] == "train" for m in meta),
               "heldout": sum(m["split"] == "heldout" for m in meta)}
    log(f"dataset: {summary}")
    return summary


def _cached_teacher_answers(model: OmniModel, texts: list[str], cached: Path, log) -> list:
    """The teacher's answers to texts, read back from `cached` when it holds the answers to the same texts
    (a resumed build), else generated and saved there."""
    saved = json.loads(cached.read_text()) if cached.exists() else None
    if saved and saved["texts"] == texts:
        return saved["answers"]
    answers = teacher_answers(model, texts, log=log)
    cached.write_text(json.dumps({"texts": texts, "answers": answers}))
    return answers


def _resume_chunks(partial: Path, rng: np.random.Generator) -> tuple[dict, list, int]:
    """(clips, meta, next prompt) of the chunks an interrupted build saved in `partial` (empty, empty, 0 for
    a new build); rng is set to its state after the last of them."""
    clips, meta, start = {}, [], 0
    for chunk in sorted(partial.glob("chunk*.json")):  # a resumed build: what was already made
        done = json.loads(chunk.read_text())
        meta += done["meta"]
        clips.update(load_file(str(chunk.with_suffix(".safetensors"))))
        start = done["next"]
        rng.bit_generator.state = done["rng"]
    return clips, meta, start


def _clip_adder(model: OmniModel, out_dir: Path, clips: dict, meta: list, eos: int) -> Callable:
    """add(wave, text, held, **fields): the clip's encoder features into `clips`, its record into `meta`;
    a held-out clip is also written as audio."""

    def add(wave, text, held, **fields):
        with torch.inference_mode():
            frames = torch.cat(model.audio_tower.encode(wave))
        key = f"clip{len(meta)}"
        clips[key] = frames.to("cpu", torch.float16).contiguous()
        if held:  # kept as audio too: the cascade and the e2e path are measured on the same clips
            (out_dir / "heldout").mkdir(parents=True, exist_ok=True)
            sf.write(out_dir / "heldout" / f"{key}.wav", wave, SAMPLE_RATE)
        meta.append({"key": key, "text": text, "split": "heldout" if held else "train",
                     "seconds": len(wave) / SAMPLE_RATE,
                     "transcript_ids": model.tokenizer.encode(text, add_special_tokens=False) + [eos], **fields})

    return add


def _speak_prompt(i: int, p: speech_data.Prompt, answer: list[int] | None, add: Callable, rng: np.random.Generator,
                  evaluation_sentences: set[str], variants: int, eos: int, recipe: speech_data.Recipe) -> None:
    """Prompt i spoken (1 take of a fortune, mention or everyday sentence, 2 of a held-out prompt, else
    `variants`), each take but a held-out prompt's first augmented, and added."""
    held = speech_data.is_held_out_sentence(p.text, evaluation_sentences)
    n = 1 if p.kind in ("fortune", "mention", "everyday") else 2 if held else variants
    for v in range(n):
        voice = recipe.voice(i, v, held, rng)
        wave = speak(p.text, voice, int(rng.integers(120, 195)), int(rng.integers(25, 75)))
        if not held or v:
            wave = speech_data.augment(wave, rng, recipe.telephone)
        add(wave, p.text, held, answer_key=p.key, kind=p.kind, voice=voice,
            answer_ids=None if answer is None else answer + [eos])


def _save_chunk(name: Path, new: list[dict], clips: dict, next_prompt: int, rng: np.random.Generator) -> None:
    """The clips of one chunk (`new`: their records), where the build goes on and the generator's state."""
    save_file({m["key"]: clips[m["key"]] for m in new}, str(name.with_suffix(".safetensors")))
    name.with_suffix(".json").write_text(json.dumps({"next": next_prompt, "meta": new, "rng": rng.bit_generator.state}))


# -- training ---------------------------------------------------------------------------------------
