"""Continuous batching: conversations that generate at the same time share each pass over the weights.

    batcher = Batcher(engine, eos_ids)       # a StaticEngine with slots > 1
    for token in batcher.generate(embeds, SamplingConfig(...)):   # from any thread
        ...

One worker thread owns the engine. Each new request is prefilled into a free cache slot as soon as
one is free (others keep decoding meanwhile), the one whose cache already holds most of its prompt;
every step then decodes one token for all running requests with `engine.decode_batch`, so k
conversations cost about one pass over the weights per token instead of k. A request that stops
being read (the consumer closed its generator: a Stop button, a dropped connection) frees its slot
at the next step. Tokens are the same as decoding each conversation alone (tests/test_batching.py).
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Iterator

import torch

from encoders.errors import Stop
from fusion.runtime.generate import SamplingConfig, sample

log = logging.getLogger(__name__)
_DONE = object()


@dataclass
class _Request:
    embeds: torch.Tensor
    config: SamplingConfig
    generator: torch.Generator | None
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    produced: int = 0
    last: int = -1
    cancelled: bool = False
    warm: str | None = None  # a warm-up (Batcher.warm): prefilled, never decoded; its stream's key
    stop: Stop = lambda: False  # a warm-up's: give way now (asked before each layer)


class Batcher:
    def __init__(self, engine, eos_ids: set[int]):
        self.engine = engine
        self.eos_ids = eos_ids
        self._pending: deque[_Request] = deque()
        self._active: dict[int, _Request] = {}  # cache slot -> request
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self.steps = 0  # decode_batch calls, and the rows they carried (for tests and benchmarks)
        self.rows = 0
        self.warmed = 0  # warm-ups prefilled
        self._busy = False  # the worker is prefilling or decoding outside the lock
        self._answers_waiting = 0  # requests to answer submitted and not yet admitted: a warm-up gives way
        self._prefilling_answer = False  # and while one is prefilled
        self._closing = False  # close(): the worker stops after its step

    def idle(self) -> bool:
        """Nothing waiting or generating: the engine may be used directly (benchmarks, tests)."""
        with self._wake:
            return not self._pending and not self._active and not self._busy

    def fits(self, prompt_len: int, config: SamplingConfig) -> bool:
        return prompt_len + config.max_new_tokens <= self.engine.max_len

    def answering(self) -> bool:
        """An answer is waiting for a slot or being prefilled: warm-ups, and hearing, give way to it."""
        return self._answers_waiting > 0 or self._prefilling_answer

    def generate(self, embeds: torch.Tensor, config: SamplingConfig) -> Iterator[int]:
        """(1, L, D) prompt embeddings -> new token ids until EOS or max_new_tokens. The request is queued
        now, before its tokens are read (answering() is true from here)."""
        if not self.fits(embeds.shape[1], config):
            raise ValueError(f"{embeds.shape[1]} + {config.max_new_tokens} tokens exceed the cache ({self.engine.max_len})")
        generator = torch.Generator().manual_seed(config.seed) if config.seed is not None else None
        request = _Request(embeds.detach(), config, generator)
        self._submit(request)
        return self._read(request)

    @staticmethod
    def _read(request: _Request) -> Iterator[int]:
        try:
            while True:
                item = request.out.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            request.cancelled = True  # read no further: the worker frees the slot

    def warm(self, embeds: torch.Tensor, key: str = "", stop: Stop = lambda: False) -> None:
        """Prefill (1, L, D) embeddings into a free slot without generating, and return at once: the
        beginning of a prompt still being spoken. The request that follows with the same beginning finds
        those positions in the cache (prefix caching) and computes only the rest. A newer warm-up with the
        same `key` (the next piece of the same recording) replaces one still waiting; one that does not
        fit the cache is dropped. Answers come first: a warm-up still waiting when one is asked for is
        dropped, and one being prefilled stops at the next layer when one is, or when `stop()` says so."""
        if embeds.shape[1] >= self.engine.max_len:
            return
        self._submit(_Request(embeds.detach(), SamplingConfig(max_new_tokens=1), None, warm=key, stop=stop))

    def _submit(self, request: _Request) -> None:
        """Queue a request for the worker (started if it is not running); a warm-up replaces a waiting
        warm-up of the same key."""
        with self._wake:
            if self._closing:
                raise RuntimeError("the decoder's batcher is closed (the process is exiting)")
            if request.warm is not None:
                for stale in [r for r in self._pending if r.warm == request.warm]:
                    self._pending.remove(stale)
            else:
                self._answers_waiting += 1
            self._pending.append(request)
            if self._thread is None or not self._thread.is_alive():
                if self._thread is None:
                    atexit.register(self.close)
                self._thread = threading.Thread(target=self._run, name="pocket-omni-decode", daemon=True)
                self._thread.start()
            self._wake.notify()

    def close(self) -> None:
        """Stop the worker after the step it is in (run at exit: a process that ended mid-step, its thread
        inside the C++ ops, aborted with "terminate called without an active exception"). Requests still
        running or waiting end where they are."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)

    # -- the worker ------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._wake:
                self._busy = False
                while not self._pending and not self._active and not self._closing:
                    self._wake.wait()
                if self._closing:
                    for request in [*self._pending, *self._active.values()]:
                        request.out.put(_DONE)
                    self._pending.clear()
                    self._active.clear()
                    return
                admit = []
                free = [s for s in range(self.engine.slots) if s not in self._active]
                # answers come first: warm-ups still waiting would delay them (and a recording's own answer
                # reuses what its earlier pieces warmed)
                if self._answers_waiting:
                    self._pending = deque(r for r in self._pending if r.warm is None)
                while self._pending and free:
                    request = self._pending.popleft()
                    self._answers_waiting -= request.warm is None
                    # the free slot whose cache already holds most of this prompt (a conversation's
                    # earlier turns, or at least the system prompt): prefix caching
                    slot = max(free, key=lambda s: self.engine.reusable(request.embeds, s))
                    free.remove(slot)
                    admit.append((slot, request))
                self._busy = bool(admit or self._active)
            for slot, request in admit:
                if request.cancelled:
                    continue
                try:
                    if request.warm is None:
                        self._prefilling_answer = True
                        self._emit(slot, request, self.engine.prefill(request.embeds, slot))
                    else:
                        give_way = request.stop
                        self.warmed += self.engine.warm(request.embeds, slot, lambda: self.answering() or give_way())
                except Exception as err:  # a bad request fails alone
                    request.out.put(err)
                finally:
                    self._prefilling_answer = False
            for slot in [s for s, r in self._active.items() if r.cancelled]:
                del self._active[slot]
            if not self._active:
                continue
            slots = sorted(self._active)
            try:
                logits = self.engine.decode_batch([self._active[s].last for s in slots], slots)
            except Exception as err:
                log.exception("batched decode failed")
                for s in slots:
                    self._active.pop(s).out.put(err)
                continue
            self.steps, self.rows = self.steps + 1, self.rows + len(slots)
            for row, slot in enumerate(slots):
                self._emit(slot, self._active[slot], logits[row])

    def _emit(self, slot: int, request: _Request, logits: torch.Tensor) -> None:
        """Sample the request's next token from its logits; keep it running or finish it."""
        c = request.config
        token = sample(logits, c.temperature, c.top_p, request.generator)
        if request.cancelled or token in self.eos_ids:
            self._finish(slot, request)
            return
        request.out.put(token)
        request.produced += 1
        if request.produced >= c.max_new_tokens:  # no step for a token nobody will read
            self._finish(slot, request)
            return
        request.last = token
        self._active[slot] = request

    def _finish(self, slot: int, request: _Request) -> None:
        self._active.pop(slot, None)
        request.out.put(_DONE)
