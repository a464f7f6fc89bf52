"""`launch.py bench decode --model qwen-1.5b [--llama-bench PATH]`: a GGUF decoder kept quantized
(fusion/runtime/quant_engine.py) beside its peers on the same file, in one run (figures, never pass/fail).

- ours: decode tokens/s (64 greedy tokens after a 24-token prompt, end of text masked, best of 3),
  prefill tokens/s at 64, 128 and 512 rows, time to first token for a typed question, a photo question
  and a spoken question of up to 5 s (auto mode: Whisper transcribes it) with the system prompt
  already cached and the question new, peak RSS;
- the bandwidth limit: bytes read per token (every weight block once, the KV cache) over the machine's
  measured read bandwidth;
- llama.cpp's `llama-bench` on the same GGUF file with the same thread count (`--llama-bench PATH`;
  app/build_llama_bench.sh builds it from the llama.cpp sources in PyPI's llama-cpp-python sdist):
  its tg64 and pp64/pp128/pp512, and our ratio to each;
- transformers' generate() on the same GGUF file (dequantized to float32 by transformers), last
  because it needs 4 bytes a weight: decode tokens/s and time to first token of a 37-token prompt, and
  whether its greedy tokens equal ours.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from app.bench_timing import read_bandwidth, timed
from encoders.audio import SAMPLE_RATE
from encoders.speech import speak
from encoders.vision import load_photo
from fusion.assistant import Assistant
from fusion.presets import Preset
from fusion.prompt import Audio, Image
from fusion.runtime.generate import SamplingConfig, Timings

SYSTEM = "Answer briefly."
QUESTION = "What is the capital of Italy, and which river runs through it? Answer in one sentence."  # 37 tokens in the chat


def bench_quant(model: Preset, llama_bench: str | None = None, threads: int | None = None, new_tokens: int = 64) -> dict:
    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    assistant = Assistant.load_default(model=model.name)
    engine = assistant.runtime.engine()
    gguf = Path(assistant.model.decoder.file.path)
    out = {"model": model.name, "threads": torch.get_num_threads(), "cpu": torch.backends.cpu.get_cpu_capability(),
           "load_s": round(time.perf_counter() - t0, 1), "weights_MB": round(engine.weight_bytes() / 1e6)}
    bandwidth = read_bandwidth()
    per_token = engine.weight_bytes() + engine.cache_bytes(24 + new_tokens // 2)
    out.update(bandwidth_GBps=round(bandwidth / 1e9, 1), bytes_per_token_MB=round(per_token / 1e6, 1),
               bandwidth_limit_tok_s=round(bandwidth / per_token, 1))
    ids = torch.randint(100, 40000, (24,), generator=torch.Generator().manual_seed(0))
    emb = engine.embed_rows(ids)[None]
    seconds, ours = min(_greedy(engine, emb, assistant.model.eos_ids, new_tokens) for _ in range(3))
    out["decode_tok_s"] = round(new_tokens / seconds, 1)
    out["decode_fraction_of_bandwidth_limit"] = round(out["decode_tok_s"] / out["bandwidth_limit_tok_s"], 2)
    for rows in (64, 128, 512):
        out[f"prefill{rows}_tok_s"] = round(rows / _prefill_s(engine, rows), 1)
    out.update(_first_tokens(assistant))
    out["peak_rss_MB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if llama_bench:
        out.update(_llama_bench(llama_bench, gguf, out["threads"], new_tokens))
        for key, theirs in [("decode_tok_s", "llama_tg"), *[(f"prefill{r}_tok_s", f"llama_pp{r}") for r in (64, 128, 512)]]:
            if out.get(theirs):
                out[f"{key}_vs_llama"] = round(out[key] / out[theirs], 2)
    out.update(_transformers(assistant, gguf, ids, ours, new_tokens))
    return out


@torch.inference_mode()
def _greedy(engine, emb: torch.Tensor, eos_ids, n: int) -> tuple[float, list[int]]:
    engine.reset()
    logits, tokens = engine.prefill(emb), []
    t = time.perf_counter()
    for _ in range(n):
        logits[list(eos_ids)] = float("-inf")
        tokens.append(int(logits.argmax()))
        logits = engine.decode(tokens[-1])
    return time.perf_counter() - t, tokens


def _prefill_s(engine, rows: int) -> float:
    x = engine.embed_rows(torch.randint(100, 40000, (rows,), generator=torch.Generator().manual_seed(rows)))[None]

    def once():
        engine.reset()
        engine.prefill(x)

    return min(timed(once, 3 if rows <= 128 else 2))


TYPED = ["What is the capital of Italy?", "How many legs does a spider have?", "What do bees make?",
         "Which planet is closest to the sun?"]
PHOTO = ["What is in this picture?", "Describe this photo.", "What animal is this?", "What do you see here?"]
SPOKEN = ["Could you please tell me what the capital city of France is called?",  # 4.1-4.9 s at 150 wpm
          "How many days are there in one week, and how many are there in a year?",
          "What colour is the sky on a clear and sunny afternoon in the summer?",
          "Can you tell me how many legs a spider has, compared with an insect?"]


def _first_tokens(assistant) -> dict:
    """Seconds to the first answer token with the system prompt's keys and values already in the cache:
    four different questions of each kind (the first untimed), median of the other three. Each brings
    a new photo or clip object, so the towers and Whisper run each time, as for a user's new question."""
    pixels = load_photo("skimage:chelsea")
    waves = [np.asarray(speak(q, "en-us", 150, 50), dtype=np.float32)[:5 * SAMPLE_RATE] for q in SPOKEN]
    kinds = {"typed": [[q] for q in TYPED],
             "photo": [[Image(pixels, "chelsea"), q] for q in PHOTO],
             "spoken": [[Audio(w, f"question{i}.wav")] for i, w in enumerate(waves)]}
    out = {}
    for name, contents in kinds.items():
        def first(content) -> float:
            timings = Timings()
            messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}]
            for _ in assistant.chat(messages, "auto", SamplingConfig(max_new_tokens=1), timings):
                pass
            return timings.first_token_s

        first(contents[0])
        out[f"first_token_{name}_s"] = round(statistics.median(first(c) for c in contents[1:]), 3)
    seconds = sorted(len(w) / SAMPLE_RATE for w in waves)
    out["spoken_clip_s"] = f"{seconds[0]:.1f}-{seconds[-1]:.1f}"
    return out


def _llama_bench(binary: str, gguf: Path, threads: int, new_tokens: int) -> dict:
    cmd = [binary, "-m", str(gguf), "-t", str(threads), "-p", "64,128,512", "-n", str(new_tokens), "-r", "3", "-o", "json"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return {"llama_bench_error": (done.stderr or done.stdout).strip().splitlines()[-1:]}
    out = {}
    for row in json.loads(done.stdout):
        if row.get("n_gen"):
            out["llama_tg"] = round(row["avg_ts"], 1)
        else:
            out[f"llama_pp{row['n_prompt']}"] = round(row["avg_ts"], 1)
    out["llama_build"] = f"{row.get('build_commit', '?')} ({row.get('cpu_info', '?')})"
    return out


def _transformers(assistant, gguf: Path, ids: torch.Tensor, ours: list[int], new_tokens: int) -> dict:
    from transformers import AutoModelForCausalLM

    t = time.perf_counter()
    hf = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    out = {"hf_load_s": round(time.perf_counter() - t, 1)}
    tok = assistant.model.tokenizer
    prompt = tok.apply_chat_template([{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    with torch.inference_mode():
        first = [timed(lambda: hf.generate(prompt, max_new_tokens=1, do_sample=False), 1)[0] for _ in range(3)]
        out["hf_first_token_s"] = round(statistics.median(first), 3)
        n = 16
        prefill = min(timed(lambda: hf(input_ids=ids[None]), 2))
        t = time.perf_counter()
        gen = hf.generate(ids[None], max_new_tokens=n, min_new_tokens=n, do_sample=False)
        out["hf_generate_decode_tok_s"] = round((n - 1) / (time.perf_counter() - t - prefill), 1)
        out["greedy_tokens_same_as_hf_16"] = gen[0, ids.shape[0]:].tolist() == ours[:n]
    return out
