"""`launch.py bench api`: many clients at once against the real API on the default model, in this
process on a loopback port: every request answered, latency percentiles, and the process's memory
before and after (figures, not a pass/fail test)."""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path

import httpx

from app.api import ApiConfig, create_app, serving_in_thread
from app.chat import ModelHolder
from fusion.assistant import Assistant

QUESTIONS = ["What is the capital of France?", "Name three colours.", "How many legs does a spider have?",
             "Write one sentence about the sea.", "What do bees make?"]


def rss_mb() -> float:
    """This process's resident memory now (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_api(clients: int = 20, requests: int = 3, max_tokens: int = 32) -> dict:
    holder = ModelHolder(Assistant.load_default)
    holder.wait()
    holder.get()  # raises if loading failed
    before = rss_mb()
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client(n: int, url: str) -> None:
        with httpx.Client(base_url=url, timeout=600) as http:
            for i in range(requests):
                body = {"model": "pocket-auto", "max_tokens": max_tokens, "stream": (n + i) % 2 == 0,
                        "messages": [{"role": "user", "content": QUESTIONS[(n + i) % len(QUESTIONS)]}]}
                t0 = time.perf_counter()
                r = http.post("/v1/chat/completions", json=body)
                took = time.perf_counter() - t0
                with lock:
                    (latencies.append(took) if r.status_code == 200 else failures.append(f"{r.status_code}"))

    start = time.perf_counter()
    with serving_in_thread(create_app(holder, ApiConfig())) as url:
        threads = [threading.Thread(target=client, args=(n, url)) for n in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    wall = time.perf_counter() - start
    latencies.sort()
    return {"clients": clients, "requests_each": requests, "answered": len(latencies), "failed": len(failures),
            "failures": ",".join(failures) or "-", "wall_s": round(wall, 1),
            "latency_p50_s": round(statistics.median(latencies), 2) if latencies else None,
            "latency_p95_s": round(latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))], 2)
            if latencies else None, "rss_before_MB": round(before), "rss_after_MB": round(rss_mb())}
