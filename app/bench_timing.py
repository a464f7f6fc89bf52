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
