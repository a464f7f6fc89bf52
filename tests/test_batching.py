"""Continuous batching (fusion.runtime.batching) on a tiny random Llama: the tokens each conversation gets are
those it gets alone, whatever runs beside it; a reader that stops frees its slot."""

import threading

import pytest
import torch

from fusion.runtime.batching import Batcher
from fusion.runtime.engine import StaticEngine
from fusion.runtime.generate import SamplingConfig, generate_tokens


def prompts(decoder, lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    emb = decoder.get_input_embeddings()
    with torch.inference_mode():
        return [emb(torch.randint(3, decoder.config.vocab_size, (1, n), generator=g)) for n in lengths]


@pytest.mark.parametrize("weights", ["fp32", "auto"])
def test_concurrent_conversations_get_the_tokens_they_get_alone(tiny_decoder, weights):
    alone = StaticEngine(tiny_decoder, max_len=64, decode_weights=weights)
    batcher = Batcher(StaticEngine(tiny_decoder, max_len=64, decode_weights=weights, slots=2), eos_ids=set())
    embeds = prompts(tiny_decoder, [3, 9, 5, 12, 1])  # five conversations for two slots: some wait
    configs = [SamplingConfig(max_new_tokens=n) for n in (12, 7, 20, 4, 9)]
    configs[2] = SamplingConfig(max_new_tokens=20, temperature=0.8, seed=5)  # sampling, seeded
    want = [list(generate_tokens(tiny_decoder, e, set(), c, alone)) for e, c in zip(embeds, configs)]
    got = [None] * len(embeds)
    start = threading.Barrier(len(embeds))

    def run(i):
        start.wait()
        got[i] = list(batcher.generate(embeds[i], configs[i]))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(embeds))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert got == want
    assert batcher.rows > batcher.steps  # some steps carried two conversations


def test_a_reader_that_stops_frees_its_slot_and_eos_ends_a_conversation(tiny_decoder):
    engine = StaticEngine(tiny_decoder, max_len=64, slots=1)
    first = prompts(tiny_decoder, [4])[0]
    with torch.inference_mode():
        greedy = list(generate_tokens(tiny_decoder, first, set(), SamplingConfig(max_new_tokens=30), engine))
    batcher = Batcher(engine, eos_ids={greedy[5]})
    stream = batcher.generate(first, SamplingConfig(max_new_tokens=30))
    assert [next(stream) for _ in range(3)] == greedy[:3]
    stream.close()  # the Stop button: with one slot, the next request can only run if this one is freed
    assert list(batcher.generate(first, SamplingConfig(max_new_tokens=30))) == greedy[:greedy.index(greedy[5])]
    with pytest.raises(ValueError, match="exceed"):
        next(batcher.generate(first, SamplingConfig(max_new_tokens=100)))
