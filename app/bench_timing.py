"""Shared by the benchmarks: wall-clock timing of repeated calls and printing figures."""

from __future__ import annotations

import time


def timed(f, repeats: int, warmup: int = 1) -> list[float]:
    """Seconds of each of `repeats` calls of f, after `warmup` untimed ones (CPU wall clock)."""
    for _ in range(warmup):
        f()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return times


def print_figures(figures: dict) -> None:
    width = max(map(len, figures))
    for k, v in figures.items():
        print(f"{k:<{width}}  {v}")


def read_bandwidth() -> float:
    """The machine's read bandwidth in bytes/s: summing a buffer far larger than the caches, the best of 9
    passes (on a shared host a mean would count other tenants' bursts against the limit)."""
    import torch  # lazy: the printing and timing above serve benchmarks that never load torch

    buf = torch.ones(128 * 1024 * 1024, dtype=torch.float32)
    return buf.numel() * 4 / min(timed(buf.sum, 9))
