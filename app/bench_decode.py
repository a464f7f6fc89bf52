"""Benchmarks of the decoder: `python launch.py bench decode|kernels` (figures, never pass/fail).

decode: decode and prefill tokens/s of the static-cache engine beside transformers' generate() on the
same weights, against the machine's memory-bandwidth limit; several conversations decoded together; time
to first token for a text, a photo and a spoken question; chats at once vs one by one; one token's matrix
products in each weight format; the vision tower compiled; peak memory (see bench_decode).

kernels: the Triton attention kernels (varlen prefill, split-KV decode) beside PyTorch SDPA's flash backend
on the same inputs, on a GPU (`--small`: toy sizes, a check of the benchmark itself, e.g. under
TRITON_INTERPRET=1 on a CPU).
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from encoders.audio import SAMPLE_RATE, load_audio
from encoders.vision import load_photo
from fusion.assistant import Assistant, Timings
from fusion.prompt import Audio, Image
from fusion.runtime.attention import backend_for, decode_backend
from fusion.runtime.engine import StaticEngine
from fusion.runtime.generate import SamplingConfig
from fusion.runtime.serving import RuntimeConfig
from fusion.weights.fetch import cache_dir

from app.bench_timing import read_bandwidth, timed


def bench_decode(new_tokens: int = 64, prefill_tokens: int = 512, threads: int | None = None) -> dict:
    """Decode and prefill speed of the static-cache engine beside transformers' generate() on the same
    weights in the same run, the machine's memory-bandwidth limit for the bytes read per token, time
    to first token for a text, an image and a 5-second spoken question, and peak memory."""
    if threads:
        torch.set_num_threads(threads)
    assistant = Assistant.load_default()
    model, dec = assistant.model, assistant.model.decoder
    start = time.perf_counter()
    engine = assistant.runtime.engine()
    # transformers' forward on the same model, for the time-to-first-token columns
    hf = Assistant(model, assistant.transcriber, RuntimeConfig(decode_engine="hf"))
    out = {"threads": torch.get_num_threads(), "dtype": str(engine.dtype).replace("torch.", ""),
           "decode_weights": engine.decode_weights,
           "attention_backend": backend_for(dec.device),
           "decode_attention_backend": decode_backend(dec.device, engine.ops is not None),
           "engine_build_s": round(time.perf_counter() - start, 2), "engine_layouts": engine.layouts}
    bandwidth = read_bandwidth()
    ids = torch.randint(100, 40000, (1, 24), generator=torch.Generator().manual_seed(0))
    per_token = engine.weight_bytes() + engine.cache_bytes(ids.shape[1] + new_tokens // 2)
    out.update(bandwidth_GBps=round(bandwidth / 1e9, 1), bytes_per_token_MB=round(per_token / 1e6, 1),
               bandwidth_limit_tok_s=round(bandwidth / per_token, 1))
    with torch.inference_mode():
        emb = dec.get_input_embeddings()(ids)
        out.update(_decode_speed(model, engine, ids, emb, new_tokens, bandwidth, per_token))
        out.update(_batch_decode_speed(dec, engine, ids, emb, new_tokens))
        out.update(_prefill_speed(dec, engine, prefill_tokens))
    out.update(_time_to_first_token(assistant, hf, engine))
    out.update(_concurrent_chats(assistant, SamplingConfig))
    out.update(_weight_formats(engine))
    out.update(_compiled_vision_tower(model.vision_tower, load_photo("skimage:chelsea")))
    out["peak_rss_MB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def _greedy_decode(engine, emb: torch.Tensor, eos_ids, new_tokens: int) -> tuple[float, list[int]]:
    """(seconds, tokens) of new_tokens greedy decode steps after a prefill of emb."""
    logits, tokens = engine.prefill(emb), []
    t1 = time.perf_counter()
    for _ in range(new_tokens):
        logits[list(eos_ids)] = float("-inf")  # the same forced length as min_new_tokens
        tokens.append(int(logits.argmax()))
        logits = engine.decode(tokens[-1])
    return time.perf_counter() - t1, tokens


def _hf_generate_decode(dec, ids: torch.Tensor, new_tokens: int) -> tuple[float, list[int]]:
    """(seconds, tokens) of transformers' greedy generate() for new_tokens + 1 tokens, its prefill (timed
    alone) subtracted."""
    t0 = time.perf_counter()
    dec(input_ids=ids)  # the prefill alone, to subtract
    prefill_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    gen = dec.generate(ids, max_new_tokens=new_tokens + 1, min_new_tokens=new_tokens + 1, do_sample=False)
    tokens = gen[0, ids.shape[1]:].tolist()
    return time.perf_counter() - t0 - prefill_s, tokens


def _decode_speed(model, engine, ids: torch.Tensor, emb: torch.Tensor, new_tokens: int, bandwidth: float,
                  per_token: int) -> dict:
    """Decode tokens/s of the engine (its decode weights, and float32 weights) and of generate(), best of 2
    after a warm-up, with the fraction of the bandwidth limit each engine reaches."""
    dec = model.decoder
    exact = StaticEngine(dec, engine.max_len, decode_weights="fp32") if engine.decode_weights != "fp32" else engine
    greedy = lambda eng: _greedy_decode(eng, emb, model.eos_ids, new_tokens)  # noqa: E731
    greedy(engine), greedy(exact), _hf_generate_decode(dec, ids, new_tokens)  # warm-up
    ours_s, tokens = min(greedy(engine) for _ in range(2))
    exact_s = min(greedy(exact)[0] for _ in range(2))
    theirs = [_hf_generate_decode(dec, ids, new_tokens) for _ in range(2)]
    theirs_s, hf_tokens = min(s for s, _ in theirs), theirs[-1][1]
    exact_per_token = exact.weight_bytes() + exact.cache_bytes(ids.shape[1] + new_tokens // 2)
    return dict(decode_tok_s=round(new_tokens / ours_s, 1), hf_generate_decode_tok_s=round(new_tokens / theirs_s, 1),
                decode_speedup_vs_hf=round(theirs_s / ours_s, 2),
                decode_fraction_of_bandwidth_limit=round(new_tokens / ours_s / (bandwidth / per_token), 2),
                greedy_tokens_same_as_hf=tokens == hf_tokens[:new_tokens],
                decode_fp32_tok_s=round(new_tokens / exact_s, 1),
                decode_fp32_speedup_vs_hf=round(theirs_s / exact_s, 2),
                decode_fp32_fraction_of_bandwidth_limit=round(new_tokens / exact_s / (bandwidth / exact_per_token), 2))


def _batch_decode_speed(dec, engine, ids: torch.Tensor, emb: torch.Tensor, new_tokens: int, batch: int = 4) -> dict:
    """Several conversations decoded together: the weights are read once per step for all of them."""
    together = StaticEngine(dec, 256, decode_weights=engine.decode_weights, slots=batch)
    firsts = [int(together.prefill(emb[:, :ids.shape[1] - s], slot=s).argmax()) for s in range(batch)]
    together.decode_batch(firsts, list(range(batch)))
    t = time.perf_counter()
    for _ in range(new_tokens // 2):
        together.decode_batch(firsts, list(range(batch)))
    step_s = (time.perf_counter() - t) / (new_tokens // 2)
    return dict(batch_conversations=batch, batch_decode_tok_s_total=round(batch / step_s, 1),
                batch_decode_tok_s_each=round(1 / step_s, 1))


def _prefill_speed(dec, engine, prefill_tokens: int) -> dict:
    """Prefill tokens/s of a prompt of prefill_tokens, the engine's (nothing reused from its cache) and
    transformers' forward, the second of two runs."""
    long = torch.randint(100, 40000, (1, prefill_tokens), generator=torch.Generator().manual_seed(1))
    long_emb = dec.get_input_embeddings()(long)
    cold = lambda: (engine.reset(0), engine.prefill(long_emb))  # noqa: E731  nothing reused from the cache
    out = {}
    for name, f in (("prefill", cold), ("hf_prefill", lambda: dec(input_ids=long))):
        f()
        t = time.perf_counter()
        f()
        out[f"{name}_tok_s"] = round(prefill_tokens / (time.perf_counter() - t))
    return out


def _time_to_first_token(assistant, hf, engine) -> dict:
    """Time to first token of a new conversation about a text, a photo and a spoken question (espeak-ng),
    through the static engine (`assistant`) and transformers' forward (`hf`), best of 3 after a warm-up,
    and through the engine with only the system prompt cached."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "q.wav"
        text = "Could you please tell me what the capital city of France is, and why it is famous around the world?"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "175", "-w", str(wav), text], check=True)
        clip = load_audio(str(wav))
        out["audio_question_s"] = round(len(clip) / SAMPLE_RATE, 1)
        cases = {"text": ["What is the capital of France?"],
                 "image": [Image(load_photo("skimage:chelsea")), "What is in this picture?"],
                 "audio": [Audio(clip)]}
        for kind, content in cases.items():
            for engine_kind, bot in (("static", assistant), ("hf", hf)):
                _first_token_s(bot, engine, content)  # warm-up
                best = min(_first_token_s(bot, engine, content) for _ in range(3))
                out[f"ttft_{kind}_s" if engine_kind == "static" else f"ttft_{kind}_hf_s"] = round(best, 3)
            best = min(_first_token_s(assistant, engine, content, system_prompt_cached=True) for _ in range(3))
            out[f"ttft_{kind}_system_prompt_cached_s"] = round(best, 3)
    return out


def _first_token_s(bot, engine, content, system_prompt_cached: bool = False) -> float:
    """A new conversation: nothing cached, or (system_prompt_cached) only what every conversation
    starts with, as after any earlier chat (the engine's prefix caching)."""
    bot.runtime.media_cache.clear()
    for slot in range(engine.slots):
        engine.reset(slot)
    if system_prompt_cached:
        for _ in bot.chat([{"role": "user", "content": "Hi."}], "e2e", SamplingConfig(max_new_tokens=1)):
            pass
    timings = Timings()
    for _ in bot.chat([{"role": "user", "content": content}], "e2e", SamplingConfig(max_new_tokens=2), timings):
        pass
    return timings.first_token_s


def _weight_formats(engine) -> dict:
    """One decode token's matrix products (every layer's, one row) in each weight format at hand: float32
    BLAS, float16 through our C++ kernel (the default), bfloat16 and int8 weight-only (per-row scales,
    `aten._weight_int8pack_mm`, gpt-fast's CPU path) through torch. ms per token, best of 5."""
    mats = [m for layer in engine.layers for m in (layer.qkv, layer.o, layer.gate_up, layer.down)]
    weights = [m.weight if m.weight is not None else m.transposed.t().contiguous() for m in mats]
    rows = {w.shape[1]: torch.randn(1, w.shape[1]) for w in weights}
    runs = {"fp32_blas": lambda: [F.linear(rows[w.shape[1]], w) for w in weights]}
    if engine.ops is not None:
        runs["fp16_cpp"] = lambda: [m.half(engine.ops, rows[m.shape[1]]) for m in mats]
    bf16 = [w.bfloat16() for w in weights]
    rows_bf16 = {k: v.bfloat16() for k, v in rows.items()}
    runs["bf16_torch"] = lambda: [F.linear(rows_bf16[w.shape[1]], w) for w in bf16]
    scales = [w.abs().amax(1) / 127 for w in weights]
    int8 = [(torch.round(w / s[:, None]).to(torch.int8), s) for w, s in zip(weights, scales)]
    runs["int8_torch"] = lambda: [torch.ops.aten._weight_int8pack_mm(rows[q.shape[1]], q, s) for q, s in int8]
    out = {}
    with torch.inference_mode():
        for name, f in runs.items():
            try:
                out[f"products_per_token_ms_{name}"] = round(1000 * min(timed(f, 5)), 1)
            except RuntimeError as err:  # an op this torch build lacks
                out[f"products_per_token_ms_{name}"] = f"n/a ({str(err).splitlines()[0][:60]})"
    return out


def _compiled_vision_tower(tower, photo) -> dict:
    """torch.compile (inductor) on the vision tower, the one eager module on a photo's path to the first
    token: ms per photo eager vs compiled, and the compile time with the on-disk cache cold (as found)
    and warm. Kept off by default: it saves a few ms per photo for seconds at every start."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir() / "inductor"))

    x = tower.pixels([photo])
    out = {}
    with torch.inference_mode():
        out["vision_tower_eager_ms"] = round(1000 * min(timed(lambda: tower.model(x), 10)), 1)
        for name in ("vision_compile_s_cache_as_found", "vision_compile_s_cache_warm"):
            torch._dynamo.reset()
            compiled = torch.compile(tower.model, dynamic=False)
            t = time.perf_counter()
            compiled(x)
            out[name] = round(time.perf_counter() - t, 1)
        out["vision_tower_compiled_ms"] = round(1000 * min(timed(lambda: compiled(x), 10)), 1)
        out["vision_compiled_max_abs_diff"] = float((compiled(x) - tower.model(x)).abs().max())
    torch._dynamo.reset()
    return out


def _concurrent_chats(assistant, SamplingConfig, n: int = 4, tokens: int = 48) -> dict:
    """n text chats at once through Assistant.chat (continuous batching) vs the same chats one after
    another: wall time and generated tokens per second over all of them."""
    questions = ["Name three colours.", "What is the capital of France?", "Write a haiku about rain.",
                 "Give me two tips for sleeping well.", "What is a prime number?", "Say hello in French."][:n]
    sampling = SamplingConfig(max_new_tokens=tokens)

    def ask(q, timings):
        for _ in assistant.chat([{"role": "user", "content": q}], "e2e", sampling, timings):
            pass

    ask(questions[0], Timings())  # warm-up
    timings = [Timings() for _ in questions]
    t = time.perf_counter()
    for q, tm in zip(questions, timings):
        ask(q, tm)
    one_by_one = time.perf_counter() - t
    one_by_one_tokens = sum(tm.new_tokens for tm in timings)
    timings = [Timings() for _ in questions]
    threads = [threading.Thread(target=ask, args=(q, tm)) for q, tm in zip(questions, timings)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    together = time.perf_counter() - t
    return {"chats_at_once": n, "chats_one_by_one_s": round(one_by_one, 2), "chats_at_once_s": round(together, 2),
            "chats_one_by_one_tok_s": round(one_by_one_tokens / one_by_one, 1),
            "chats_at_once_tok_s": round(sum(tm.new_tokens for tm in timings) / together, 1)}


def bench_kernels(device: str | None = None, small: bool = False, repeats: int = 20) -> dict:
    """The Triton attention kernels beside PyTorch SDPA's flash backend on the same inputs (GPU figures;
    `small` runs toy sizes, e.g. under TRITON_INTERPRET=1, to check the benchmark itself).

    prefill: 4 conversations of different lengths packed into one call (varlen, causal, GQA) vs SDPA
    flash run on each conversation (its keys/values expanded to all heads beforehand, untimed):
    milliseconds and TFLOP/s (causal: half the score matrix). decode: one query per conversation over
    KV caches of 1k..16k entries, split-KV vs SDPA over the same caches: microseconds and GB/s of cache read."""
    from fusion.runtime import kernels  # lazy: it imports triton, an optional dependency

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16
    heads, kv_heads, d = (4, 2, 32) if small else (32, 8, 128)
    gen = torch.Generator().manual_seed(0)
    rand = lambda *shape: torch.randn(*shape, generator=gen).to(device, dtype)  # noqa: E731
    timed = lambda fn: _device_seconds(fn, device, repeats)  # noqa: E731
    out = {"device": torch.cuda.get_device_name() if device == "cuda" else device, "dtype": "float16",
           "heads": f"{heads} query / {kv_heads} kv, head dim {d}"}
    out.update(_prefill_kernel_figures(kernels.prefill_attention, rand, timed, heads, kv_heads, d, device,
                                       [5, 17, 33, 64] if small else [512, 1024, 2048, 4096]))
    out.update(_decode_kernel_figures(kernels.decode_attention, rand, timed, heads, kv_heads, d, device,
                                      [16, 64] if small else [1024, 4096, 16384]))
    return out


def _device_seconds(fn, device: str, repeats: int) -> float:
    """Median seconds of fn after one untimed call: CUDA events on a GPU, the wall clock elsewhere."""
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
        times = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        return statistics.median(times)
    return statistics.median(timed(fn, repeats, warmup=0))  # warmed up above


def _prefill_kernel_figures(prefill_attention, rand, timed, heads: int, kv_heads: int, d: int, device: str,
                            lengths: list[int]) -> dict:
    """The varlen prefill kernel on the conversations packed, vs SDPA flash on each conversation alone."""
    q, k, v = rand(sum(lengths), heads, d), rand(sum(lengths), kv_heads, d), rand(sum(lengths), kv_heads, d)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device)
    per_seq = []
    for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):
        expand = lambda t: t[a:b].repeat_interleave(heads // kv_heads, dim=1).transpose(0, 1)[None].contiguous()  # noqa: E731
        per_seq.append((q[a:b].transpose(0, 1)[None].contiguous(), expand(k), expand(v)))

    def sdpa_prefill():
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            for qs, ks, vs in per_seq:
                F.scaled_dot_product_attention(qs, ks, vs, is_causal=True)

    ours = timed(lambda: prefill_attention(q, k, v, cu, cu, causal=True))
    theirs = timed(sdpa_prefill)
    flops = sum(2 * 2 * heads * d * n * n / 2 for n in lengths)
    return dict(prefill_lengths=lengths, prefill_ms=round(ours * 1e3, 3), prefill_sdpa_flash_ms=round(theirs * 1e3, 3),
                prefill_ratio_vs_flash=round(ours / theirs, 2), prefill_tflops=round(flops / ours / 1e12, 1),
                prefill_sdpa_flash_tflops=round(flops / theirs / 1e12, 1))


def _decode_kernel_figures(decode_attention, rand, timed, heads: int, kv_heads: int, d: int, device: str,
                           contexts: list[int], batch: int = 8) -> dict:
    """The split-KV decode kernel, one query per conversation over caches of each context length, vs SDPA."""
    out = {}
    for context in contexts:
        qd = rand(batch, heads, d)
        kc, vc = rand(batch, kv_heads, context, d), rand(batch, kv_heads, context, d)
        ke, ve = (t.repeat_interleave(heads // kv_heads, dim=1) for t in (kc, vc))
        lengths_t = torch.full((batch,), context, dtype=torch.int32, device=device)
        ours = timed(lambda: decode_attention(qd, kc, vc, lengths_t))

        def sdpa_decode():
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
                F.scaled_dot_product_attention(qd[:, :, None], ke, ve)

        theirs = timed(sdpa_decode)
        cache_bytes = 2 * batch * kv_heads * context * d * 2
        out[f"decode_{context}_us"] = round(ours * 1e6, 1)
        out[f"decode_{context}_sdpa_us"] = round(theirs * 1e6, 1)
        out[f"decode_{context}_speedup_vs_sdpa"] = round(theirs / ours, 2)
        out[f"decode_{context}_cache_GBps"] = round(cache_bytes / ours / 1e9, 1)
    return out
