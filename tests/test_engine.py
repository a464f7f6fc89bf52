"""The static-cache decode engine against transformers on the same weights (tiny random Llama here;
the real default model in the weights-marked test)."""

import pytest
import torch

from fusion.attention import backend_for
from fusion.engine import StaticEngine
from fusion.generate import SamplingConfig, generate_tokens


def hf_greedy(decoder, ids, n):
    out = decoder.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                           eos_token_id=None, pad_token_id=0)
    return out[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("prompt_len", [1, 5, 17])
def test_engine_logits_and_greedy_tokens_match_transformers(tiny_decoder, prompt_len):
    ids = torch.randint(3, tiny_decoder.config.vocab_size, (1, prompt_len), generator=torch.Generator().manual_seed(0))
    engine = StaticEngine(tiny_decoder, max_len=64)
    with torch.inference_mode():
        embeds = tiny_decoder.get_input_embeddings()(ids)
        torch.testing.assert_close(engine.prefill(embeds), tiny_decoder(input_ids=ids).logits[0, -1], atol=1e-4, rtol=1e-4)
        ours = list(generate_tokens(tiny_decoder, embeds, set(), SamplingConfig(max_new_tokens=24), engine))
    assert ours == hf_greedy(tiny_decoder, ids, 24)
    assert engine.length == prompt_len + 23  # the last token is sampled, never fed back


def test_engine_is_reused_across_conversations_and_falls_back_when_too_long(tiny_decoder):
    engine = StaticEngine(tiny_decoder, max_len=32)
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
    engine = StaticEngine(tiny_decoder, max_len=16)
    params = sum(p.numel() for n, p in tiny_decoder.named_parameters() if "embed" not in n and "lm_head" not in n)
    params += tiny_decoder.get_input_embeddings().weight.numel()  # the tied head is read once per token
    assert engine.weight_bytes() == params * 4 - tiny_decoder.model.norm.weight.numel() * 4
    assert set(engine.layouts.values()) <= {"(in, out)", "(out, in)"} and len(engine.layouts) >= 3
    assert backend_for(torch.device("cpu")) == "sdpa"


@pytest.mark.weights
def test_engine_greedy_text_is_identical_on_the_default_model(assistant):
    dec, tok = assistant.model.decoder, assistant.model.tokenizer
    ids = tok.apply_chat_template([{"role": "user", "content": "Name three colours."}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    with torch.inference_mode():
        ours = list(generate_tokens(dec, dec.get_input_embeddings()(ids), set(), SamplingConfig(max_new_tokens=32),
                                    assistant.model.engine()))
    assert ours == hf_greedy(dec, ids, 32)
