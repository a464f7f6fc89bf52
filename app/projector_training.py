"""`launch.py train`: build the data, train a projector, install it in assets/, measure it on held-out data.

The held-out measurements are the ones the model card reports. Audio:
- spoken questions: does the e2e answer contain the same key answer as the answer to the text of the
  question (cases where the text answer has the key), with the cascade's figure beside it;
- "repeat what I said": word error rate of the e2e path and of Whisper's own decoder on the same
  held-out espeak-ng clips and human recordings;
- time to first token for a spoken question, e2e vs cascade.
Vision: does the answer to "What is in this picture?" name the main object of each evaluation photo,
e2e beside the cascade.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from app.metrics import contains_any, normalize_text, word_errors
from app.suites import DICTATION, SPOKEN_QUESTIONS, photo_specs
from encoders.audio import load_audio
from encoders.errors import InputError
from encoders.vision import load_photo
from fusion.assistant import Assistant, Timings
from fusion.model import OmniConfig
from fusion.presets import TINY_PRESET, preset
from fusion.prompt import REPEAT_PROMPT, Audio, Image
from fusion.runtime.generate import SamplingConfig
from fusion.training.audio_dataset import build_audio_dataset
from fusion.training.speech_data import RECIPES
from fusion.training.loop import TrainConfig, plot_curve, train_projector
from fusion.training.vision_data import build_vision_dataset
from fusion.weights.fetch import cache_dir

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "projectors"
HUMAN = [Path("/usr/share/pocketsphinx/test/data/librivox"), Path("/usr/share/pocketsphinx/test/data/cards")]


def evaluation_sentences() -> set[str]:
    return {q for _, q, _ in SPOKEN_QUESTIONS} | set(DICTATION)


def train(modality: str, steps: int, batch_size: int, variants: int, seed: int, work: Path | None,
          rebuild_data: bool, install: bool, objective: str | None = None, lr: float | None = None,
          mentions: int = 0, vocabulary_words: int = 0, recipe_name: str = "r4") -> dict:
    """`objective` None: ctc for audio, distill for vision; `lr` None: 2e-3 for ctc, 1e-3 for distill."""
    objective = objective or ("ctc" if modality == "audio" else "distill")
    if objective == "ctc" and modality != "audio":
        raise InputError("the ctc objective reads transcripts: audio only (vision trains with distill)")
    chosen = preset()
    work = work or cache_dir() / "train" / (modality if chosen.name == TINY_PRESET else f"{chosen.name}-{modality}")
    # the data recipe (fusion/training/speech_data.py: RECIPES): r4 by default (the shipped Qwen readout's);
    # r3 the SmolLM2 readout's; r5 measured worse at the same budget (model card)
    recipe = RECIPES[recipe_name]
    answers = recipe.answers(objective)
    data_name = recipe.folder(mentions, answers)
    hidden = OmniConfig().projector_hidden if modality == "audio" else OmniConfig().vision_hidden
    data = work / f"data-{data_name}-seed{seed}-v{variants}"
    run = (work / f"run-{data_name}-seed{seed}-s{steps}-b{batch_size}-h{hidden}"
           / ("" if objective == "distill" else objective))
    if lr:
        run = run / f"lr{lr:g}"
    t0 = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"  # a GPU when there is one (untested: none lent)
    assistant = Assistant.load_default(device=device, projectors=None, untrained=True, model=chosen.name)
    if rebuild_data and data.exists():
        shutil.rmtree(data)
    if not (data / "meta.json").exists():
        if modality == "audio":
            build_audio_dataset(assistant.model, data, evaluation_sentences(), variants, seed, mentions=mentions,
                                recipe=recipe, answers=answers)
        else:
            build_vision_dataset(assistant.model, data, seed=seed)
    data_s = time.perf_counter() - t0
    config = TrainConfig(modality, steps, batch_size, seed=seed, objective=objective,
                         lr=lr or (2e-3 if objective == "ctc" else TrainConfig.lr), vocabulary_words=vocabulary_words)
    weights = train_projector(assistant.model, data, run, config)
    train_s = time.perf_counter() - t0 - data_s
    plot_curve(run / "train_log.jsonl", run / f"{modality}_curve.png", f"{modality} projector ({objective}), seed {seed}",
               "CTC loss per target token" if objective == "ctc" else "cross-entropy on target tokens")
    assistant.model.load_projectors(weights)
    measure = heldout_metrics if modality == "audio" else heldout_photo_metrics
    # train_s: this invocation (seconds when a finished run is only resumed); steps_s: the steps' own time,
    # summed over the run's pieces in its log
    metrics = {"data_s": round(data_s), "train_s": round(train_s),
               "steps_s": round(steps_seconds(run / "train_log.jsonl")), "objective": objective, "steps": steps,
               "batch_size": batch_size, "seed": seed, **measure(assistant, data)}
    (run / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics, indent=2))
    if install:
        install_weights(weights, run / f"{modality}_curve.png", run / "metrics.json", modality, chosen.projectors)
    return metrics


def steps_seconds(log_path: Path) -> float:
    """The seconds a run's steps took, from its log: each invocation's clock starts at 0 (a resume), so the
    pieces' last readings are summed."""
    total, last = 0.0, 0.0
    for line in log_path.read_text().splitlines():
        elapsed = json.loads(line)["elapsed_s"]
        if elapsed < last:
            total += last
        last = elapsed
    return total + last


def install_weights(weights: Path, curve: Path, metrics: Path, modality: str, name: str = "pocket.safetensors") -> None:
    """Merge the trained projector into assets/projectors/<name> (the preset's file; SmolLM2's: pocket.safetensors)."""
    ASSETS.mkdir(parents=True, exist_ok=True)
    target = ASSETS / name
    state = load_file(str(target)) if target.exists() else {}
    state = {k: v for k, v in state.items() if not k.startswith(modality + ".")}
    state.update(load_file(str(weights)))
    # float16 on disk halves the file; load_state_dict casts back to the model's dtype (and to the buffer's:
    # token ids, like the CTC readout's vocabulary, stay integers, in int32 where they fit)
    save_file({k: _narrowed(v).contiguous() for k, v in state.items()}, str(target), metadata={"format": "pt"})
    prefix = "" if name == "pocket.safetensors" else Path(name).stem + "-"  # SmolLM2's files keep their names
    shutil.copy(curve, ASSETS / f"{prefix}{modality}_curve.png")
    shutil.copy(metrics, ASSETS / f"{prefix}{modality}_metrics.json")
    print(f"installed {modality} projector in {target}")


def _narrowed(v: torch.Tensor) -> torch.Tensor:
    """A tensor as it is stored in assets/: floats in float16, int64 in int32 when every value fits (not
    the readout trigram's packed keys)."""
    if v.is_floating_point():
        return v.to(torch.float16)
    if v.dtype == torch.int64 and (v.numel() == 0 or (v.min() >= -2 ** 31 and v.max() < 2 ** 31)):
        return v.to(torch.int32)
    return v


def heldout_metrics(assistant, data: Path, max_tokens: int = 24) -> dict:
    """Spoken questions, "repeat what I said" and time to first token on the held-out clips (see the
    module's docstring)."""
    meta = [m for m in json.loads((data / "meta.json").read_text()) if m["split"] == "heldout"]
    sampling = SamplingConfig(max_new_tokens=max_tokens)

    def answer(content, mode):
        try:
            return "".join(assistant.chat([{"role": "user", "content": content}], mode, sampling))
        except InputError:  # e.g. the cascade's transcript is empty: nothing said counts as every word missed
            return ""

    qa = _spoken_qa(assistant, meta, data, answer)
    repeat = _repeat_errors(assistant, meta, data, answer)
    five = [m for m in meta if 4.0 <= m["seconds"] <= 6.5 and m["kind"] != "fortune"][:5] or meta[:5]
    ttft = _first_token_times(assistant, [data / "heldout" / f"{m['key']}.wav" for m in five])
    n_qa = max(qa["cases"], 1)
    has_readout = assistant.model.audio_readout is not None
    everyday = _readout_errors(assistant, meta, data) if has_readout else {}
    return {
        "spoken_qa_cases": qa["cases"],
        "spoken_qa_same_key_e2e": qa["e2e"] / n_qa, "spoken_qa_same_key_cascade": qa["cascade"] / n_qa,
        **{f"repeat_wer_{kind}_{path_name}": r[path_name] / max(r["words"], 1) for kind, r in repeat.items()
           for path_name in ("e2e", "heard", "cascade", "whisper") if path_name != "heard" or has_readout},
        "ttft_s_e2e": statistics.median(ttft["e2e"]), "ttft_s_cascade": statistics.median(ttft["cascade"]),
        "ttft_clip_seconds": statistics.fmean(m["seconds"] for m in five),
        **{f"readout_wer_everyday_{k}": v / max(everyday["words"], 1) for k, v in everyday.items()
           if k in ("heard", "whisper")},
        **({"readout_wer_everyday_clips": everyday["clips"]} if everyday else {}),
    }


def _readout_errors(assistant, meta: list[dict], data: Path, limit: int = 100) -> dict:
    """The readout's words (what the e2e decoder reads) and Whisper's transcript against the truth on up to
    `limit` held-out clips of open-vocabulary text (WordNet's examples, generated everyday sentences): no
    decoder pass, so many more clips than the repeat task's. Empty for a recipe without them (r3, r4)."""
    out = dict.fromkeys(("heard", "whisper", "words", "clips"), 0)
    for m in [m for m in meta if m["kind"] == "everyday"][:limit]:
        wave = load_audio(data / "heldout" / f"{m['key']}.wav")
        out["heard"] += word_errors(m["text"], assistant.model.audio_words(Audio(wave)) or "")[0]
        out["whisper"] += word_errors(m["text"], assistant.transcribe(wave))[0]
        out["words"] += len(normalize_text(m["text"]).split())
        out["clips"] += 1
    return out if out["clips"] else {}


def _spoken_qa(assistant, meta: list[dict], data: Path, answer) -> dict:
    """Held-out spoken questions whose typed answer (the same assistant asked the question's text) holds the
    key: how many e2e and cascade answers hold it too."""
    qa = {"cases": 0, "e2e": 0, "cascade": 0}
    typed: dict[str, str] = {}  # a question's two takes share its typed answer
    for m in meta:
        if not m["answer_key"]:  # dictation, fortunes, mentions: the repeat task only
            continue
        if m["text"] not in typed:
            typed[m["text"]] = answer([m["text"]], "e2e")
        if not contains_any(typed[m["text"]], [m["answer_key"]]):
            continue
        wave = load_audio(data / "heldout" / f"{m['key']}.wav")
        qa["cases"] += 1
        qa["e2e"] += contains_any(answer([Audio(wave)], "e2e"), [m["answer_key"]])
        qa["cascade"] += contains_any(answer([Audio(wave)], "cascade"), [m["answer_key"]])
    return qa


def _repeat_errors(assistant, meta: list[dict], data: Path, answer) -> dict:
    """"Repeat what I said" on up to 40 held-out espeak-ng clips and the human recordings: word errors per path,
    and words, for each kind of clip."""
    # errors per path, and words: e2e (the decoder's answer), heard (the CTC readout's words, what the
    # decoder is given), cascade (the decoder's answer to Whisper's transcript), whisper (the transcript)
    repeat = {kind: dict.fromkeys(("e2e", "heard", "cascade", "whisper", "words"), 0) for kind in ("espeak", "human")}
    espeak = [m for m in meta if m["kind"] != "fortune"][:20] + [m for m in meta if m["kind"] == "fortune"][:20]
    clips = [("espeak", data / "heldout" / f"{m['key']}.wav", m["text"]) for m in espeak]
    for folder in HUMAN:
        listing = next(folder.glob("*transcription"))
        for line in listing.read_text().splitlines():
            text, utt = line.replace("<s>", "").replace("</s>", "").rsplit("(", 1)
            clips.append(("human", folder / f"{utt.strip(') ')}.wav", text))
    for kind, path, text in clips:
        wave = load_audio(path)
        heard = assistant.model.audio_words(Audio(wave))
        said = {"e2e": answer([Audio(wave), REPEAT_PROMPT], "e2e"), "cascade": answer([Audio(wave), REPEAT_PROMPT], "cascade"),
                "whisper": assistant.transcribe(wave), "heard": heard if heard is not None else ""}
        r = repeat[kind]
        for path_name, out in said.items():
            r[path_name] += word_errors(text, out)[0]
        r["words"] += len(normalize_text(text).split())
    return repeat


def _first_token_times(assistant, clips: list[Path]) -> dict[str, list[float]]:
    """Seconds to the first token of the answer to each spoken question, e2e and cascade."""
    ttft = {"e2e": [], "cascade": []}
    for clip in clips:
        wave = load_audio(clip)
        for mode in ttft:
            t = Timings()
            for _ in assistant.chat([{"role": "user", "content": [Audio(wave)]}], mode,
                                    SamplingConfig(max_new_tokens=4), t):
                pass
            ttft[mode].append(t.first_token_s or t.total_s)
    return ttft


def heldout_photo_metrics(assistant, data: Path, max_tokens: int = 24) -> dict:
    """"What is in this picture?" on the evaluation photos (never trained on): does the answer name the
    main object? e2e beside the cascade."""
    sampling = SamplingConfig(max_new_tokens=max_tokens)
    hits, answers = {"e2e": 0, "cascade": 0}, {}
    photos = photo_specs()
    for spec, accepted in photos.items():
        name = spec.split(":", 1)[1]
        pixels = load_photo(spec)
        for mode in hits:
            text = "".join(assistant.chat([{"role": "user", "content": [Image(pixels), "What is in this picture?"]}],
                                          mode, sampling))
            answers[f"{name}/{mode}"] = text
            hits[mode] += contains_any(text, accepted)
    return {"photos": len(photos), "names_main_object_e2e": hits["e2e"] / len(photos),
            "names_main_object_cascade": hits["cascade"] / len(photos), "answers": answers}
