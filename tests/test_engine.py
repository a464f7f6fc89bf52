"""The static-cache decode engine against transformers on the same weights (tiny random Llama here;
the real default model in the weights-marked test)."""

import pytest
import torch

from fusion.runtime import cpu_ops
from fusion.runtime import engine as engine_module
from fusion.runtime.attention import backend_for
from fusion.runtime.engine import StaticEngine
from fusion.runtime.generate import SamplingConfig, generate_tokens


def hf_greedy(decoder, ids, n):
    out = decoder.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                           eos_token_id=None, pad_token_id=0)
    return out[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("prompt_len", [1, 5, 17])
def test_engine_logits_and_greedy_tokens_match_transformers(tiny_decoder, prompt_len):
    ids = torch.randint(3, tiny_decoder.config.vocab_size, (1, prompt_len), generator=torch.Generator().manual_seed(0))
    engine = StaticEngine(tiny_decoder, max_len=64, decode_weights="fp32")
    with torch.inference_mode():
        embeds = tiny_decoder.get_input_embeddings()(ids)
        torch.testing.assert_close(engine.prefill(embeds), tiny_decoder(input_ids=ids).logits[0, -1], atol=1e-4, rtol=1e-4)
        ours = list(generate_tokens(tiny_decoder, embeds, set(), SamplingConfig(max_new_tokens=24), engine))
    assert ours == hf_greedy(tiny_decoder, ids, 24)
    assert engine.length == prompt_len + 23  # the last token is sampled, never fed back


def test_engine_is_reused_across_conversations_and_falls_back_when_too_long(tiny_decoder):
    engine = StaticEngine(tiny_decoder, max_len=32, decode_weights="fp32")
    g = torch.Generator().manual_seed(1)
    a, b = (torch.randint(3, tiny_decoder.config.vocab_size, (1, n), generator=g) for n in (9, 4))
    emb = tiny_decoder.get_input_embeddings()
    with torch.inference_mode():
        first = list(generate_tokens(tiny_decoder, emb(a), set(), SamplingConfig(max_new_tokens=10), engine))
        list(generate_tokens(tiny_decoder, emb(b), set(), SamplingConfig(max_new_tokens=10), engine))
        again = list(generate_tokens(tiny_decoder, emb(a), set(), SamplingConfig(max_new_tokens=10), engine))
        long = list(generate_tokens(tiny_decoder, emb(a), set(), SamplingConfig(max_new_tokens=40), engine))
    assert first == again  # a stale cache from another conversation never leaks in
    assert long == hf_greedy(tiny_decoder, a, 40)  # 9 + 40 > 32: the transformers path, same tokens
    with pytest.raises(ValueError, match="longer than"):
        engine.prefill(emb(torch.randint(3, tiny_decoder.config.vocab_size, (1, 40), generator=g)))


def test_layouts_are_picked_per_shape_and_bytes_are_counted(tiny_decoder):
    engine = StaticEngine(tiny_decoder, max_len=16, decode_weights="fp32")
    params = sum(p.numel() for n, p in tiny_decoder.named_parameters() if "embed" not in n and "lm_head" not in n)
    params += tiny_decoder.get_input_embeddings().weight.numel()  # the tied head is read once per token
    assert engine.weight_bytes() == params * 4 - tiny_decoder.model.norm.weight.numel() * 4
    assert set(engine.layouts.values()) <= {"(in, out)", "(out, in)"} and len(engine.layouts) >= 3
    assert backend_for(torch.device("cpu")) == "sdpa"


def test_a_new_turn_reuses_the_cached_prefix_and_gives_the_same_logits(tiny_decoder):
    """Prefix caching: the second prompt shares 9 leading positions with what the cache holds (the first
    prompt and 3 decoded tokens); only the rest is computed, and the logits equal a fresh prefill's."""
    g = torch.Generator().manual_seed(6)
    emb = tiny_decoder.get_input_embeddings()
    first = torch.randint(3, tiny_decoder.config.vocab_size, (1, 6), generator=g)
    engine = StaticEngine(tiny_decoder, max_len=64, decode_weights="fp32")
    fresh = StaticEngine(tiny_decoder, max_len=64, decode_weights="fp32")
    with torch.inference_mode():
        logits, fed = engine.prefill(emb(first)), first[0].tolist()
        for _ in range(3):
            fed.append(int(logits.argmax()))
            logits = engine.decode(fed[-1])
        turn = torch.tensor([fed + [7, 8, 9, 10]])  # the conversation so far, then a new user turn
        assert engine.reusable(emb(turn)) == 9
        torch.testing.assert_close(engine.prefill(emb(turn)), fresh.prefill(emb(turn)), atol=1e-5, rtol=1e-5)
        changed = turn.clone()
        changed[0, 2] = changed[0, 2] % 50 + 3  # a different early token: reuse stops there
        assert engine.reusable(emb(changed)) == 2
        torch.testing.assert_close(engine.prefill(emb(changed)), fresh.prefill(emb(changed)), atol=1e-5, rtol=1e-5)
        assert engine.reusable(emb(changed)) == changed.shape[1] - 1  # the same prompt again: all but the last


needs_ops = pytest.mark.skipif(cpu_ops.unavailable_reason() is not None, reason=str(cpu_ops.unavailable_reason()))


@needs_ops
@pytest.mark.parametrize("batch", [1, 3, 8, 17])  # from 8 rows: two at a time; 17 leaves one over
@pytest.mark.parametrize("shape", [(64, 32), (13, 24), (200, 576)])  # 13: rows padded to a block of 8
def test_half_matrix_vector_product_matches_float_math_on_the_same_float16_weights(batch, shape):
    ops = cpu_ops.load()
    g = torch.Generator().manual_seed(0)
    w, x, res = torch.randn(shape, generator=g), torch.randn(batch, shape[1], generator=g), torch.randn(batch, shape[0], generator=g)
    packed = ops.pack_half(w)
    want = x.double() @ w.half().double().T
    torch.testing.assert_close(ops.gemv_half(x, packed, shape[0]).double(), want, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(ops.gemv_half(x, packed, shape[0], res).double(), want + res.double(), atol=1e-4, rtol=1e-5)
    with pytest.raises(RuntimeError, match="columns"):
        ops.gemv_half(torch.randn(batch, shape[1] + 8), packed, shape[0])


@needs_ops
def test_rms_norm_and_silu_mul_match_torch():
    ops = cpu_ops.load()
    x, w, gu = torch.randn(2, 40), torch.rand(40), torch.randn(2, 64)
    torch.testing.assert_close(ops.rms_norm(x, w, 1e-5), torch.nn.functional.rms_norm(x, (40,), w, 1e-5))
    gate, up = gu.chunk(2, dim=-1)
    torch.testing.assert_close(ops.silu_mul(gu), torch.nn.functional.silu(gate) * up)


@needs_ops
def test_float16_decode_stays_within_tolerance_of_float32(tiny_decoder):
    exact = StaticEngine(tiny_decoder, max_len=64, decode_weights="fp32")
    half = StaticEngine(tiny_decoder, max_len=64, decode_weights="fp16")
    assert half.decode_weights == "fp16" and half.weight_bytes() < 0.6 * exact.weight_bytes()
    ids = torch.randint(3, tiny_decoder.config.vocab_size, (1, 6), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        embeds = tiny_decoder.get_input_embeddings()(ids)
        a, b = exact.prefill(embeds), half.prefill(embeds)  # a short prefill: float16 weights too
        assert (a - b).abs().max() < 0.02 * a.abs().max() and not torch.equal(a, b)
        for token in torch.randint(3, tiny_decoder.config.vocab_size, (20,), generator=torch.Generator().manual_seed(3)):
            a, b = exact.decode(int(token)), half.decode(int(token))  # the same tokens fed to both
            assert (a - b).abs().max() < 0.02 * a.abs().max()
    assert half.length == exact.length == 26


@needs_ops
def test_a_long_prefill_uses_the_float32_weights(tiny_decoder, monkeypatch):
    monkeypatch.setattr(engine_module, "PREFILL_HALF_ROWS", 4)
    exact = StaticEngine(tiny_decoder, max_len=64, decode_weights="fp32")
    half = StaticEngine(tiny_decoder, max_len=64, decode_weights="fp16")
    ids = torch.randint(3, tiny_decoder.config.vocab_size, (1, 6), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        embeds = tiny_decoder.get_input_embeddings()(ids)
        torch.testing.assert_close(half.prefill(embeds), exact.prefill(embeds))


@pytest.mark.parametrize("weights", ["fp32", pytest.param("fp16", marks=needs_ops)])
def test_batched_decode_gives_each_conversation_its_own_tokens(tiny_decoder, weights):
    """Three conversations of different lengths decoded together (slots in any order) give the tokens
    each gets alone."""
    g = torch.Generator().manual_seed(4)
    prompts = [torch.randint(3, tiny_decoder.config.vocab_size, (1, n), generator=g) for n in (3, 11, 6)]
    emb = tiny_decoder.get_input_embeddings()
    alone = StaticEngine(tiny_decoder, max_len=48, decode_weights=weights)
    together = StaticEngine(tiny_decoder, max_len=48, decode_weights=weights, slots=3)
    order = [2, 0, 1]  # conversation c lives in slot order[c]
    with torch.inference_mode():
        want = []
        for ids in prompts:
            logits, tokens = alone.prefill(emb(ids)), []
            for _ in range(12):
                tokens.append(int(logits.argmax()))
                logits = alone.decode(tokens[-1])
            want.append(tokens)
        logits = torch.stack([together.prefill(emb(ids), slot=s) for ids, s in zip(prompts, order)])
        got = [[] for _ in prompts]
        for _ in range(12):
            for c, row in enumerate(logits):
                got[c].append(int(row.argmax()))
            logits = together.decode_batch([got[c][-1] for c in range(3)], order)
    assert got == want
    assert together.lengths == [11 + 12, 6 + 12, 3 + 12]  # slot order[c] holds conversation c
    with pytest.raises(ValueError, match="distinct"):
        together.decode_batch([1, 2], [0, 0])


@needs_ops
@pytest.mark.parametrize("lengths", [(7, 2, 13), (700, 3, 1300)])  # long: the cache read in splits, some empty
def test_fused_cpp_decode_attention_matches_the_torch_path(tiny_decoder, monkeypatch, lengths):
    """The C++ decode step (rotary, cache write, attention in one call) against rotary + index_copy +
    SDPA, on ragged conversations in slots out of order: same logits, same caches."""
    from fusion.runtime import attention

    g, vocab = torch.Generator().manual_seed(5), tiny_decoder.config.vocab_size
    prompts = [tiny_decoder.get_input_embeddings()(torch.randint(3, vocab, (1, n), generator=g)) for n in lengths]
    tokens = torch.randint(3, vocab, (6, 3), generator=g).tolist()
    runs = {}
    for backend in ("sdpa", "cpp"):
        monkeypatch.setattr(attention, "_choice", backend)
        eng = StaticEngine(tiny_decoder, max_len=max(lengths) + 8, decode_weights="fp16", slots=4)
        assert attention.decode_backend(eng.device, eng.ops is not None) == backend
        with torch.inference_mode():
            for p, slot in zip(prompts, (3, 0, 1)):
                eng.prefill(p, slot=slot)
            logits = [eng.decode_batch(step, [3, 0, 1]) for step in tokens]
        runs[backend] = torch.stack(logits), eng.k_cache.clone(), eng.v_cache.clone()
    for want, got in zip(runs["sdpa"], runs["cpp"]):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.weights
@pytest.mark.parametrize("question", ["Name three colours.", "What is the capital of France?",
                                      "Write a short poem about the sea."])
def test_engine_greedy_text_is_identical_on_the_default_model(assistant, question):
    """The default engine (float16 decode weights where the C++ ops build) gives transformers' tokens."""
    dec, tok = assistant.model.decoder, assistant.model.tokenizer
    ids = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    with torch.inference_mode():
        ours = list(generate_tokens(dec, dec.get_input_embeddings()(ids), set(), SamplingConfig(max_new_tokens=32),
                                    assistant.runtime.engine()))
    assert ours == hf_greedy(dec, ids, 32)
