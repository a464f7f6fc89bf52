"""Continuous batching (fusion.runtime.batching) on a tiny random Llama: the tokens each conversation gets are
those it gets alone, whatever runs beside it; a reader that stops frees its slot."""

import threading
import time

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


def _until(condition, seconds=20.0):
    end = time.monotonic() + seconds
    while not condition() and time.monotonic() < end:
        time.sleep(0.01)
    assert condition()


def test_a_warm_up_prefills_the_spoken_beginning_and_changes_no_token(tiny_decoder):
    """Batcher.warm while a question is still being spoken: the answer to the finished question computes only
    the positions after the shared beginning, and its tokens are those it gets without the warm-up."""
    full = prompts(tiny_decoder, [14], seed=3)[0]
    partial = torch.cat([full[:, :9], prompts(tiny_decoder, [3], seed=4)[0]], 1)  # 9 the same, then not
    config = SamplingConfig(max_new_tokens=8)
    with torch.inference_mode():
        cold = list(generate_tokens(tiny_decoder, full, set(), config, StaticEngine(tiny_decoder, max_len=64)))
    engine = StaticEngine(tiny_decoder, max_len=64, slots=2)
    computed, forward = [], engine.forward
    engine.forward = lambda x, slot=0, stop=None: (computed.append(x.shape[1]), forward(x, slot, stop))[1]
    batcher = Batcher(engine, set())
    batcher.warm(partial, "recording")
    _until(lambda: batcher.warmed == 1)
    assert list(batcher.generate(full, config)) == cold
    assert computed == [12, 14 - 9]  # the warm-up's 12 positions, then the 5 after the shared 9
    batcher.warm(prompts(tiny_decoder, [64])[0])  # longer than the cache: dropped, nothing raised
    assert batcher.warmed == 1


def test_a_newer_warm_up_of_the_same_recording_replaces_one_still_waiting(tiny_decoder):
    engine = StaticEngine(tiny_decoder, max_len=64, slots=1)
    release, warm, seen = threading.Event(), engine.warm, []

    def slow_warm(embeds, slot=0, stop=lambda: False):
        seen.append(embeds.shape[1])
        release.wait(20)
        return warm(embeds, slot, stop)

    engine.warm = slow_warm
    batcher = Batcher(engine, set())
    pieces = prompts(tiny_decoder, [3, 5, 7, 9])
    batcher.warm(pieces[0], "a")
    _until(lambda: seen == [3])  # the worker is busy with the first piece
    for p in pieces[1:3]:
        batcher.warm(p, "a")
    batcher.warm(pieces[3], "b")  # another recording's piece stays
    release.set()
    _until(lambda: batcher.warmed == 3)
    assert seen == [3, 7, 9]


def test_answers_come_first_a_warm_up_waiting_is_dropped_and_one_running_gives_way(tiny_decoder):
    """A recording's last piece must not delay its answer: with one slot, the answer asked for while a warm-up
    is prefilled stops it at the next layer, the warm-up waiting behind it is never computed, and the answer's
    tokens are those it gets cold."""
    full, piece, other = prompts(tiny_decoder, [14, 10, 6], seed=5)
    config = SamplingConfig(max_new_tokens=6)
    with torch.inference_mode():
        cold = list(generate_tokens(tiny_decoder, full, set(), config, StaticEngine(tiny_decoder, max_len=64)))
    engine = StaticEngine(tiny_decoder, max_len=64, slots=1)
    running, warm, seen, gave_way = threading.Event(), engine.warm, [], []

    def warm_until_asked(embeds, slot=0, stop=lambda: False):
        seen.append(embeds.shape[1])
        running.set()
        _until(stop)  # holds the worker until the answer is asked for
        gave_way.append(not warm(embeds, slot, stop))
        return not gave_way[-1]

    engine.warm = warm_until_asked
    batcher = Batcher(engine, set())
    batcher.warm(piece, "a")
    _until(running.is_set)
    batcher.warm(other, "b")  # waits behind the first
    assert list(batcher.generate(full, config)) == cold
    assert seen == [10] and gave_way == [True] and batcher.warmed == 0


def test_a_stopped_warm_up_keeps_only_what_the_slot_reused(tiny_decoder):
    """engine.warm asked to stop after some layers leaves the slot's cache as it was: the next prefill
    recomputes the rows the stopped layers wrote and its logits are those of a cold prefill."""
    full = prompts(tiny_decoder, [12], seed=6)[0]
    with torch.inference_mode():
        want = StaticEngine(tiny_decoder, max_len=64).prefill(full)
        engine = StaticEngine(tiny_decoder, max_len=64)
        engine.prefill(full[:, :4])
        asked = []
        # the same rows as the prompt: a slot that trusted them after the stop would reuse a half-built cache.
        # Asked before the start, then before each layer: the first layer runs, the second does not
        assert not engine.warm(full[:, :9], 0, lambda: asked.append(1) or len(asked) > 2)
        assert engine.lengths[0] == 4
        assert torch.allclose(engine.prefill(full), want, atol=1e-5)


def test_closing_stops_the_worker_after_its_step_and_ends_its_readers(tiny_decoder):
    """Batcher.close (registered at exit): a process that ended while the worker was inside a step aborted
    ("terminate called without an active exception"); now the worker returns after the step, a reader's
    stream ends, and nothing more is taken."""
    engine = StaticEngine(tiny_decoder, max_len=64, slots=1)
    step = engine.decode_batch
    engine.decode_batch = lambda tokens, slots: (time.sleep(0.01), step(tokens, slots))[1]  # 0.5 s for 50
    batcher = Batcher(engine, set())
    stream = batcher.generate(prompts(tiny_decoder, [4])[0], SamplingConfig(max_new_tokens=50))
    first = next(stream)
    batcher.close()
    assert not batcher._thread.is_alive()
    assert len([first, *stream]) < 50
    with pytest.raises(RuntimeError, match="closed"):
        batcher.generate(prompts(tiny_decoder, [3])[0], SamplingConfig(max_new_tokens=2))
