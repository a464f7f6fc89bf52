"""Reports of an evaluation run: the summary per task and metric (accuracy, error rates, latency
percentiles), report.json / report.md / plots in a folder, and two reports compared."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # before pyplot: reports are written on machines without a screen
import matplotlib.pyplot as plt  # noqa: E402

from app.evaluation import Row  # noqa: E402


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


def summarize(rows: list[Row]) -> dict:
    """Per task and overall: accuracy or mean WER, errors, latency p50/p95, tokens/s."""
    groups: dict[str, list[Row]] = {}
    for r in rows:
        groups.setdefault(r.case["task"], []).append(r)
    out = {}
    for task, rs in sorted(groups.items()) + [("overall", rows)]:
        scored = [r for r in rs if r.score is not None]
        wer = [r.score for r in scored if r.case.get("metric") == "wer"]
        acc = [r.score for r in scored if r.case.get("metric") != "wer"]
        ttft = [r.outcome["first_token_s"] for r in scored if r.outcome["first_token_s"] is not None]
        total = [r.outcome["total_s"] for r in scored]
        rate = [r.outcome["tokens"] / r.outcome["total_s"] for r in scored
                if r.outcome["tokens"] and r.outcome["total_s"] > 0]
        out[task] = {"cases": len(rs), "errors": len(rs) - len(scored),
                     "accuracy": statistics.fmean(acc) if acc else None,
                     "mean_wer": statistics.fmean(wer) if wer else None,
                     "first_token_p50_s": _pct(ttft, 0.5), "first_token_p95_s": _pct(ttft, 0.95),
                     "total_p50_s": _pct(total, 0.5), "total_p95_s": _pct(total, 0.95),
                     "tokens_per_s": statistics.fmean(rate) if rate else None}
    return out


def _fmt(v, kind: str = "s") -> str:
    if v is None:
        return "-"
    return f"{v:.0%}" if kind == "%" else f"{v:.2f}" if kind == "s" else f"{v:.1f}"


def summary_table(summary: dict) -> str:
    head = "| task | cases | errors | accuracy | mean WER | first token p50/p95 (s) | total p50/p95 (s) | tokens/s |"
    lines = [head, "|" + "---|" * 8]
    for task, s in summary.items():
        lines.append(f"| {task} | {s['cases']} | {s['errors']} | {_fmt(s['accuracy'], '%')} | "
                     f"{_fmt(s['mean_wer'], '%')} | {_fmt(s['first_token_p50_s'])} / {_fmt(s['first_token_p95_s'])} | "
                     f"{_fmt(s['total_p50_s'])} / {_fmt(s['total_p95_s'])} | {_fmt(s['tokens_per_s'], 'n')} |")
    return "\n".join(lines)


def write_report(rows: list[Row], out_dir: Path, meta: dict) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(rows)
    report = {"meta": meta, "summary": summary, "cases": [asdict(r) for r in rows]}
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    failures = [r for r in rows if r.score is None or (r.case.get("metric") == "wer" and r.score > 0)
                or (r.case.get("metric") != "wer" and r.score < 1)]
    md = [f"# Evaluation: {meta.get('suite')}", "", f"mode `{meta.get('mode')}`, runner `{meta.get('runner')}`, "
          f"{meta.get('started')}", "", summary_table(summary), "", f"## Failures and errors ({len(failures)})", ""]
    for r in failures:
        what = r.outcome["error"] or r.outcome["answer"].replace("\n", " ")[:200]
        md.append(f"- `{r.case['id']}` ({r.case['task']}, {r.case.get('metric')}): expected "
                  f"{r.case.get('answer')}; got {'ERROR ' if r.outcome['error'] else ''}{what!r}")
    (out_dir / "report.md").write_text("\n".join(md) + "\n")
    return report


# -- comparing two runs -----------------------------------------------------------------------------

def compare_reports(a_path: Path, b_path: Path, out_dir: Path) -> str:
    """Two report.json files side by side per task, the cases that changed, and a PNG plot."""
    a, b = (json.loads(Path(p).read_text()) for p in (a_path, b_path))
    name_a = f"A: {a['meta'].get('mode')} ({Path(a_path).parent.name})"
    name_b = f"B: {b['meta'].get('mode')} ({Path(b_path).parent.name})"
    tasks = [t for t in a["summary"] if t in b["summary"]]

    def quality(s: dict) -> tuple[str, float | None]:
        return ("mean WER", s["mean_wer"]) if s["mean_wer"] is not None and s["accuracy"] is None \
            else ("accuracy", s["accuracy"])

    lines = [f"# {name_a} vs {name_b}", "", "| task | metric | A | B | change | first token p50 A / B (s) | "
             "total p50 A / B (s) | errors A / B |", "|" + "---|" * 8]
    for t in tasks:
        sa, sb = a["summary"][t], b["summary"][t]
        metric, qa = quality(sa)
        qb = quality(sb)[1]
        delta = f"{(qb - qa) * 100:+.0f} pts" if qa is not None and qb is not None else "-"
        lines.append(f"| {t} | {metric} | {_fmt(qa, '%')} | {_fmt(qb, '%')} | {delta} | "
                     f"{_fmt(sa['first_token_p50_s'])} / {_fmt(sb['first_token_p50_s'])} | "
                     f"{_fmt(sa['total_p50_s'])} / {_fmt(sb['total_p50_s'])} | {sa['errors']} / {sb['errors']} |")
    by_id = {c["case"]["id"]: c for c in a["cases"]}
    changed = []
    for c in b["cases"]:
        old = by_id.get(c["case"]["id"])
        if old and old["score"] != c["score"]:
            changed.append(f"- `{c['case']['id']}`: {old['score']} -> {c['score']}: "
                           f"{(c['outcome']['error'] or c['outcome']['answer'])[:120]!r}")
    lines += ["", f"## Cases whose score changed ({len(changed)})", ""] + changed[:50]
    out_dir.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + "\n"
    (out_dir / "compare.md").write_text(text)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(len(tasks))
    for i, (rep, name) in enumerate(((a, name_a), (b, name_b))):
        q = [quality(rep["summary"][t])[1] or 0 for t in tasks]
        lat = [rep["summary"][t]["total_p50_s"] or 0 for t in tasks]
        ax1.bar(x + (i - 0.5) * 0.4, q, 0.4, label=name)
        ax2.bar(x + (i - 0.5) * 0.4, lat, 0.4, label=name)
    for ax, title in ((ax1, "accuracy (WER for asr)"), (ax2, "total latency p50 (s)")):
        ax.set_xticks(x, tasks, rotation=20)
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "compare.png", dpi=100)
    plt.close(fig)
    return text
