"""Projector training: towers and decoder frozen, only the projector learns (Ultravox, LLaVA stage 1).

Speech is distilled as Ultravox does: the target for a spoken prompt is what the decoder answers
to the same prompt as text; a second task asks it to repeat what was said (target: the text).
The towers' features are computed once and cached (fusion/training/audio_dataset.py); each step runs the decoder forward and
backward through the spliced prompt, the loss on the target tokens only.

The CTC objective trains the audio projector with a CTCReadout instead: the transcript by CTC over the
decoder's own embedding table, no decoder pass; at inference the decoder reads the embeddings of the
tokens read (see fusion/projectors.py).

Shape letters: B batch, L sequence, D decoder width.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Literal

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm

matplotlib.use("Agg")  # before pyplot: curves are drawn on machines without a screen
import matplotlib.pyplot as plt  # noqa: E402

from fusion.model import OmniModel
from fusion.prompt import REPEAT_PROMPT, Audio, Image, build_prompt_ids
from fusion.readout_lm import TokenTrigram
from fusion.training.speech_data import fortune_sentences, is_held_out_sentence
from fusion.training.vision_data import vision_sampler
from fusion.training.vocabulary import english_words, vocabulary_ids



@dataclass
class TrainConfig:
    modality: Literal["audio", "vision"] = "audio"
    steps: int = 500
    batch_size: int = 8
    lr: float = 1e-3
    warmup: int = 20
    weight_decay: float = 0.01
    repeat_fraction: float = 0.4  # share of samples that train "repeat what was said"
    seed: int = 0
    checkpoint_every: int = 50
    # "distill": the decoder's own answer / the transcript through the frozen decoder (Ultravox);
    # "ctc": the transcript by CTC over the decoder's embedding table (audio only; see CTCReadout)
    objective: Literal["distill", "ctc"] = "distill"
    # ctc: also the token ids of this many frequent English words in the readout's vocabulary
    # (fusion/training/vocabulary.py); 0: the training transcripts' ids only (the shipped SmolLM2 readout)
    vocabulary_words: int = 0


# -- data -------------------------------------------------------------------------------------------

@torch.inference_mode()
def _prompt_parts(model: OmniModel, kind: type, prompt: str | None, n: int) -> tuple[list[int], list[int]]:
    """(ids before the media, ids after it) for a user turn of one image or clip and an optional prompt."""
    media = Audio(np.zeros(1, np.float32)) if kind is Audio else Image(np.zeros((1, 1, 3), np.uint8))
    content = [media] + ([prompt] if prompt else [])
    ids = build_prompt_ids(model.tokenizer, [{"role": "user", "content": content}], [n], model.placeholder_ids).ids
    first = ids.index(model.placeholder_ids[kind])
    return ids[:first], ids[first + n:]


# A sampler draws one training example: (projected media tokens with grad, prompt after the media, target ids).
Sampler = Callable[[random.Random], tuple[torch.Tensor, "str | None", list[int]]]


def audio_sampler(model: OmniModel, data_dir: Path, config: TrainConfig) -> Sampler:
    meta = [m for m in json.loads((data_dir / "meta.json").read_text()) if m["split"] == "train"]
    feats = load_file(str(data_dir / "features.safetensors"))

    def draw(rng: random.Random):
        m = rng.choice(meta)
        if m["answer_ids"] is None or rng.random() < config.repeat_fraction:
            return model.audio_projector(feats[m["key"]].to(model.device, torch.float32)), REPEAT_PROMPT, m["transcript_ids"]
        return model.audio_projector(feats[m["key"]].to(model.device, torch.float32)), None, m["answer_ids"]

    return draw


def ctc_objective(model: OmniModel, data_dir: Path, config: TrainConfig) -> Callable[[random.Random], torch.Tensor]:
    """CTC of the transcripts over the decoder's embedding table (CTCReadout): no decoder pass, so a step
    costs the projector only. Attaches a new readout over the training transcripts' token ids to the
    model (a resumed run then loads its checkpoint into it)."""
    meta = [m for m in json.loads((data_dir / "meta.json").read_text()) if m["split"] == "train"]
    feats = load_file(str(data_dir / "features.safetensors"))
    eos = model.tokenizer.convert_tokens_to_ids("<|im_end|>")
    words = english_words(config.vocabulary_words) if config.vocabulary_words else []
    spelled = vocabulary_ids(words, lambda text: model.tokenizer.encode(text, add_special_tokens=False))
    vocab = sorted(({t for m in meta for t in m["transcript_ids"]} | spelled) - {eos})
    readout = model.new_audio_readout(torch.tensor(vocab))
    index = {t: c + 1 for c, t in enumerate(vocab)}  # class 0 is the blank
    dev = model.device

    def loss(rng: random.Random) -> torch.Tensor:
        batch = [rng.choice(meta) for _ in range(config.batch_size)]
        tokens = [model.audio_projector(feats[m["key"]].to(dev, torch.float32)) for m in batch]
        # one product with the (large, frozen) table for the whole batch, split back per clip
        logp = readout.logits(torch.cat(tokens)).log_softmax(-1).split([len(t) for t in tokens])
        T = max(lp.shape[0] for lp in logp)
        targets = [[index[t] for t in m["transcript_ids"] if t != eos] for m in batch]
        return F.ctc_loss(torch.stack([F.pad(lp, (0, 0, 0, T - lp.shape[0])) for lp in logp], 1),  # T, B, C
                          torch.tensor([c for t in targets for c in t], device=dev),
                          torch.tensor([lp.shape[0] for lp in logp]),
                          torch.tensor([len(t) for t in targets]), zero_infinity=True)

    return loss


def distill_objective(model: OmniModel, data_dir: Path, config: TrainConfig) -> Callable[[random.Random], torch.Tensor]:
    """Cross-entropy of the decoder on the targets (its own text-prompted answer, or the transcript) after
    the spliced media tokens: the decoder runs forward and backward, frozen."""
    kind = Audio if config.modality == "audio" else Image
    draw = audio_sampler(model, data_dir, config) if kind is Audio else vision_sampler(model, data_dir, config)
    parts: dict[tuple, tuple[list[int], list[int]]] = {}  # the template depends on (prompt, n) only

    def prompt_parts(prompt: str | None, n: int) -> tuple[list[int], list[int]]:
        if (prompt, n) not in parts:
            parts[prompt, n] = _prompt_parts(model, kind, prompt, n)
        return parts[prompt, n]

    prefix, _ = _prompt_parts(model, kind, None, 1)
    assert prefix == _prompt_parts(model, kind, "x", 1)[0], "the prompt before the media must not depend on the task"
    embed = model.decoder.get_input_embeddings()
    lm_head = model.decoder.get_output_embeddings()
    model.decoder.eval()
    dev = model.device

    def loss(rng: random.Random) -> torch.Tensor:
        rows, targets = [], []
        for _ in range(config.batch_size):
            tokens, prompt, target = draw(rng)  # n, D  (grad flows here only)
            _, suffix = prompt_parts(prompt, tokens.shape[0])
            rows.append(torch.cat([tokens, embed(torch.tensor(suffix + target, device=dev))]))
            targets.append((tokens.shape[0] + len(suffix), target))
        L = max(r.shape[0] for r in rows)
        x = torch.stack([F.pad(r, (0, 0, 0, L - r.shape[0])) for r in rows])  # B, L, D (right-padded)
        with torch.no_grad():  # the shared system prompt: computed without grad, reused as cache
            cache = model.decoder(input_ids=torch.tensor([prefix] * len(rows), device=dev), use_cache=True).past_key_values
        hidden = model.decoder.model(inputs_embeds=x, past_key_values=cache, use_cache=True).last_hidden_state
        # logits only where a target token is predicted: position t predicts token t+1
        pos = [(b, start - 1 + j) for b, (start, tgt) in enumerate(targets) for j in range(len(tgt))]
        h = hidden[[b for b, _ in pos], [p for _, p in pos]]
        labels = torch.tensor([t for _, tgt in targets for t in tgt], device=dev)
        return F.cross_entropy(lm_head(h).float(), labels)

    return loss


def train_projector(model: OmniModel, data_dir: Path, out_dir: Path, config: TrainConfig, log=print,
                    stop_after: int | None = None) -> Path | None:
    """Train one projector (and, for the CTC objective, its readout) on a built dataset; resumable from
    out_dir/checkpoint.pt. `stop_after` ends this run early (as an interruption would) after that many
    steps; None returned."""
    step_loss, trained = _objective(model, data_dir, config)
    params = [p for m in trained.values() for p in m.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    schedule = lambda s: min(1.0, (s + 1) / config.warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / config.steps)))  # noqa: E731
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt, log_path = out_dir / "checkpoint.pt", out_dir / "train_log.jsonl"
    step, rng = _start_or_resume(ckpt, log_path, trained, opt, model.device, config.seed, log)
    bar = tqdm(total=config.steps, initial=step, desc=f"train {config.modality} projector ({config.objective})",
               unit="step")
    t_start = time.perf_counter()
    first = step
    while step < config.steps:
        if stop_after is not None and step - first >= stop_after:
            bar.close()
            return None
        loss = step_loss(rng)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        for g in opt.param_groups:
            g["lr"] = config.lr * schedule(step)
        opt.step()
        step += 1
        with open(log_path, "a") as f:
            f.write(json.dumps({"step": step, "loss": loss.item(), "lr": opt.param_groups[0]["lr"],
                                "elapsed_s": time.perf_counter() - t_start}) + "\n")
        bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.update(1)
        if step % config.checkpoint_every == 0 or step == config.steps:
            torch.save({**{name: m.state_dict() for name, m in trained.items()}, "optimizer": opt.state_dict(),
                        "step": step, "rng": rng, "torch_rng": torch.get_rng_state(), "config": asdict(config)}, ckpt)
    bar.close()
    if config.objective == "ctc":  # the readout's language model for its beam search (fit_readout_lm)
        # the tables as saved (float16), so the trained readout reads as a loaded one
        model.audio_readout.lm = TokenTrigram.from_tensors(fit_readout_lm(model, data_dir).to_tensors())
    return _save_projector(out_dir / f"{config.modality}_projector.safetensors", config.modality, trained)


def fit_readout_lm(model: OmniModel, data_dir: Path) -> TokenTrigram:
    """The CTC readout's language model (fusion/readout_lm.py), fitted on the text a run may learn from: the
    training split's distinct transcripts and the fortune sentences that are not held out by hash, none of
    them a held-out clip's text up to case and punctuation ("Have a nice day!" is "Have a nice day.").
    Seconds; deterministic."""
    meta = json.loads((data_dir / "meta.json").read_text())
    held = {_plain(m["text"]) for m in meta if m["split"] == "heldout"}
    transcripts = {m["text"]: m["transcript_ids"][:-1] for m in meta  # the eos dropped
                   if m["split"] == "train" and _plain(m["text"]) not in held}
    fortunes = [s for s in fortune_sentences(10 ** 6) if _plain(s) not in held and s not in transcripts
                and not is_held_out_sentence(s, set())]
    encode = lambda text: model.tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    return TokenTrigram.fit([*transcripts.values(), *map(encode, fortunes)],
                            vocabulary=model.audio_readout.vocab.shape[0])


def _plain(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())


def _objective(model: OmniModel, data_dir: Path, config: TrainConfig) -> tuple[Callable, dict[str, torch.nn.Module]]:
    """(loss of one step, the modules it trains by name) for the config's objective; the rest of the
    model frozen."""
    model.requires_grad_(False)
    if config.objective == "ctc":
        if config.modality != "audio":
            raise ValueError("the CTC objective reads transcripts: audio only")
        step_loss = ctc_objective(model, data_dir, config)  # attaches the readout it trains
        return step_loss, {"projector": model.audio_projector, "readout": model.audio_readout}
    step_loss = distill_objective(model, data_dir, config)
    return step_loss, {"projector": model.audio_projector if config.modality == "audio" else model.vision_projector}


def _start_or_resume(ckpt: Path, log_path: Path, trained: dict, opt, device, seed: int,
                     log) -> tuple[int, random.Random]:
    """(first step, the sampling generator) of a run: seeded for a new run; restored with the modules, the
    optimizer and torch's generator from the checkpoint when there is one (the curve's log trimmed to it)."""
    step = 0
    rng = random.Random(seed)
    torch.manual_seed(seed)
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False, map_location=device)
        for name, module in trained.items():
            module.load_state_dict(state[name])
        opt.load_state_dict(state["optimizer"])
        step, rng = state["step"], state["rng"]
        torch.set_rng_state(state["torch_rng"].cpu())
        log(f"resuming from step {step}")
        if log_path.exists():  # steps after the checkpoint are redone: drop their first try from the curve
            kept = [line for line in log_path.read_text().splitlines() if json.loads(line)["step"] <= step]
            log_path.write_text("".join(line + "\n" for line in kept))
    elif log_path.exists():
        log_path.unlink()
    return step, rng


def _save_projector(weights: Path, modality: str, trained: dict) -> Path:
    """The trained projector (and readout) as `modality.`-prefixed tensors in a safetensors file."""
    tensors = {f"{modality}.{k}": v for k, v in trained["projector"].state_dict().items()}
    if "readout" in trained:
        tensors.update({f"{modality}.readout.{k}": v for k, v in trained["readout"].state_dict().items()})
        if trained["readout"].lm is not None:
            tensors.update({f"{modality}.readout_lm.{k}": v for k, v in trained["readout"].lm.to_tensors().items()})
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(weights))
    return weights


def plot_curve(log_path: Path, png: Path, title: str, ylabel: str = "cross-entropy on target tokens") -> None:
    rows = [json.loads(line) for line in log_path.read_text().splitlines()]
    steps, losses = [r["step"] for r in rows], [r["loss"] for r in rows]
    k = max(1, len(losses) // 50)
    smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, losses, alpha=0.3, label="loss")
    ax.plot(steps[k - 1:], smooth, label=f"mean of {k}")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
