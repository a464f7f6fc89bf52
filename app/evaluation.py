"""Scripted multimodal evaluations: run a JSONL suite, score every case, write report.json and report.md.

Suite format, one JSON object a line (paths relative to the suite file):
  {"id": "...", "task": "vqa"|"speech_qa"|"text_qa"|"asr"|"mushroom"|"rps"|"gate"|"ordinary", "image": path|null,
   "audio": path|null, "prompt": text|null, "answer": text|[accepted, ...],
   "metric": "contains"|"exact"|"wer"|"label"|"safety"|"emergency"|"ungated",
   "system": text (optional: a system prompt or persona), "history": [text, ...] (optional: earlier user
   turns, asked and answered first; the image and audio then belong to the first of them)}

Cases run in-process or against a running server (`--server URL`) through the same task code: chat
tasks through /v1/chat/completions, structured ones (asr in cascade mode, mushroom, rps) through
/v1/pocket/run. A broken case becomes an error row; the run goes on.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import httpx
from tqdm import tqdm

from app.gestures import gesture_from_file
from app.metrics import contains_any, normalize_text, word_error_rate
from app.safety import answered_by_gate, guard, is_emergency_answer, is_safe_answer
from encoders.audio import load_audio
from encoders.errors import InputError
from encoders.vision import load_image
from fusion.assistant import Timings
from fusion.prompt import REPEAT_PROMPT, user_content

# chat tasks are answered by the assistant; structured ones by task code (STRUCTURED below). gate:
# adversarial turns about wild mushrooms, berries and plants; ordinary: turns the gate must leave alone
CHAT_TASKS = ("vqa", "speech_qa", "text_qa", "gate", "ordinary")
TASKS = (*CHAT_TASKS, "asr", "mushroom", "rps")


@dataclass
class Case:
    id: str
    task: str
    image: str | None
    audio: str | None
    prompt: str | None
    answer: list[str]
    metric: str
    system: str | None = None
    history: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, line: str, where: str) -> "Case":
        try:
            d = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{where}: not JSON ({err.msg})") from None
        if not isinstance(d, dict):
            raise InputError(f"{where}: a case must be a JSON object")
        missing = [k for k in ("id", "task", "answer", "metric") if k not in d]
        if missing:
            raise InputError(f"{where}: missing {', '.join(missing)}")
        if d["task"] not in TASKS or d["metric"] not in METRICS:
            raise InputError(f"{where}: task must be one of {TASKS} and metric one of {METRICS}")
        answer = d["answer"] if isinstance(d["answer"], list) else [d["answer"]]
        history = d.get("history") or []
        if not isinstance(history, list) or not all(isinstance(h, str) for h in history):
            raise InputError(f"{where}: history must be a list of texts")
        system = d.get("system")
        return cls(str(d["id"]), d["task"], d.get("image"), d.get("audio"), d.get("prompt"),
                   [str(a) for a in answer], d["metric"], system if isinstance(system, str) else None, history)


@dataclass
class Outcome:
    answer: str = ""
    label: str | None = None  # structured output: gesture, top mushroom candidate
    first_token_s: float | None = None
    total_s: float = 0.0
    tokens: int = 0
    error: str | None = None


@dataclass
class Row:
    case: dict
    outcome: dict
    score: float | None  # 1/0 for accuracy metrics, the WER for "wer"; None for an error row


def load_suite(path: Path) -> tuple[list[Case], list[Row]]:
    """The cases of a suite, and error rows for lines that are not valid cases."""
    cases, broken = [], []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            cases.append(Case.parse(line, f"line {n}"))
        except InputError as err:
            broken.append(Row({"id": f"line {n}", "task": "?", "raw": line[:200]}, asdict(Outcome(error=str(err))), None))
    return cases, broken


# -- scoring ----------------------------------------------------------------------------------------

def _same_as_one(text: str | None, accepted: list[str]) -> bool:
    return text is not None and any(normalize_text(text) == normalize_text(a) for a in accepted)


# metric -> (answer, accepted answers, structured label) -> score: 1/0, or the WER for "wer"
SCORERS: dict[str, Callable[[str, list[str], str | None], float]] = {
    "contains": lambda answer, accepted, label: float(contains_any(answer, accepted)),
    "exact": lambda answer, accepted, label: float(_same_as_one(answer, accepted)),
    "wer": lambda answer, accepted, label: min(word_error_rate(a, answer) for a in accepted),
    "label": lambda answer, accepted, label: float(_same_as_one(label, accepted)),
    "safety": lambda answer, accepted, label: float(is_safe_answer(answer)),
    "emergency": lambda answer, accepted, label: float(is_emergency_answer(answer)),
    "ungated": lambda answer, accepted, label: float(not answered_by_gate(answer)),
}
METRICS = tuple(SCORERS)


def score(case: Case, out: Outcome) -> float:
    return SCORERS[case.metric](out.answer, case.answer, out.label)


# -- running ----------------------------------------------------------------------------------------

Runner = Callable[[Case, Path, str], Outcome]


def chat_content(case: Case, base: Path, prompt: str | None = None) -> list:
    """The (first) user turn of a chat task: image, then audio, then the prompt."""
    return user_content(prompt or case_prompt(case), [base / case.image] if case.image else [],
                        [base / case.audio] if case.audio else [])


def case_prompt(case: Case) -> str | None:
    """What the scored turn says: the case's prompt, or for an e2e transcription, the dictation task."""
    return case.prompt or (REPEAT_PROMPT if case.task == "asr" else None)


def user_turns(case: Case) -> list[str | None]:
    """The texts of the case's user turns in order: its history, then its prompt (the scored turn)."""
    return [*case.history, case_prompt(case)]


def is_chat_task(case: Case, mode: str) -> bool:
    return case.task in CHAT_TASKS or (case.task == "asr" and mode == "e2e")


def _transcript(assistant, case: Case, base: Path) -> tuple[str, str | None]:
    return assistant.transcribe(load_audio(base / case.audio)), None


def _mushroom(assistant, case: Case, base: Path) -> tuple[str, str | None]:
    report = guard(assistant).identify(load_image(base / case.image), case.prompt or "")
    return report.text, report.top


def _gesture(assistant, case: Case, base: Path) -> tuple[str, str | None]:
    g = gesture_from_file(base / case.image)
    return g.name, g.name


# structured task -> (assistant, case, suite folder) -> (answer, label), and the medium it needs
STRUCTURED: dict[str, Callable[[object, Case, Path], tuple[str, str | None]]] = {
    "asr": _transcript, "mushroom": _mushroom, "rps": _gesture}
NEEDS = {"asr": "audio", "mushroom": "image", "rps": "image"}


def run_structured(assistant, case: Case, base: Path, mode: str) -> Outcome:
    """Tasks whose output is not (only) a chat answer; shared by the local runner and the server."""
    if case.task not in STRUCTURED:
        raise InputError(f"task {case.task} is a chat task")
    if not getattr(case, NEEDS[case.task]):
        raise InputError(f"a {case.task} case needs an {NEEDS[case.task]}", "missing_media")
    t0 = time.perf_counter()
    answer, label = STRUCTURED[case.task](assistant, case, base)
    return Outcome(answer, label, None, time.perf_counter() - t0)


def local_runner(assistant, sampling) -> Runner:
    assistant = guard(assistant)  # evaluations score what a person would be shown

    def run(case: Case, base: Path, mode: str) -> Outcome:
        if not is_chat_task(case, mode):
            return run_structured(assistant, case, base, mode)
        messages = [{"role": "system", "content": case.system}] if case.system else []
        for i, prompt in enumerate(user_turns(case)):  # earlier turns are asked and answered first
            timings = Timings()
            content = chat_content(case, base, prompt) if i == 0 else prompt
            messages.append({"role": "user", "content": content})
            text = "".join(assistant.chat(messages, mode, sampling, timings))
            messages.append({"role": "assistant", "content": text})
        return Outcome(text, None, timings.first_token_s, timings.total_s, timings.new_tokens)

    return run


def server_runner(url: str, sampling, api_key: str | None = None, timeout: float = 600) -> Runner:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    client = httpx.Client(base_url=url.rstrip("/"), timeout=timeout, headers=headers)

    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    def run(case: Case, base: Path, mode: str) -> Outcome:
        for p in (case.image, case.audio):
            if p and not (base / p).is_file():
                raise InputError(f"no such file: {base / p}")
        if not is_chat_task(case, mode):
            body = {"case": asdict(case), "mode": mode,
                    "image": b64(base / case.image) if case.image else None,
                    "audio": b64(base / case.audio) if case.audio else None}
            r = client.post("/v1/pocket/run", json=body)
            _raise_for(r)
            return Outcome(**r.json()["outcome"])
        messages = [{"role": "system", "content": case.system}] if case.system else []
        for i, prompt in enumerate(user_turns(case)):  # earlier turns are asked and answered first
            parts: list[dict] = []
            if case.image and i == 0:
                parts.append({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64(base / case.image)}"}})
            if case.audio and i == 0:
                fmt = Path(case.audio).suffix.lstrip(".").lower()
                parts.append({"type": "input_audio", "input_audio": {"data": b64(base / case.audio), "format": fmt}})
            if prompt:
                parts.append({"type": "text", "text": prompt})
            messages.append({"role": "user", "content": parts})
            first, text, tokens, took = stream_answer(client, mode, messages, sampling)
            messages.append({"role": "assistant", "content": text})
        return Outcome(text, None, first, took, tokens)

    return run


def stream_answer(client, mode: str, messages: list[dict], sampling) -> tuple[float | None, str, int, float]:
    """One streamed /v1/chat/completions call -> (time to first piece, text, pieces, total time)."""
    body = {"model": f"pocket-{mode}", "messages": messages, "stream": True,
            "max_tokens": sampling.max_new_tokens, "temperature": sampling.temperature}
    t0, first, text, tokens = time.perf_counter(), None, "", 0
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            r.read()
            _raise_for(r)
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise InputError(event["error"]["message"])
            piece = event["choices"][0]["delta"].get("content")
            if piece:
                first = first if first is not None else time.perf_counter() - t0
                text += piece
                tokens += 1
    return first, text, tokens, time.perf_counter() - t0


def _raise_for(r) -> None:
    if r.status_code != 200:
        try:
            message = r.json()["error"]["message"]
        except Exception:
            message = r.text[:200]
        raise InputError(f"server answered {r.status_code}: {message}")


def run_suite(suite: Path, runner: Runner, mode: str, progress: bool = True, limit: int | None = None) -> list[Row]:
    cases, rows = load_suite(suite)
    cases = cases[:limit] if limit else cases
    base = Path(suite).parent
    bar = tqdm(cases, desc=Path(suite).stem, unit="case", disable=not progress, dynamic_ncols=True)
    for case in bar:
        try:
            out = runner(case, base, mode)
            rows.append(Row(asdict(case), asdict(out), score(case, out)))
        except InputError as err:
            rows.append(Row(asdict(case), asdict(Outcome(error=str(err))), None))
        bar.set_postfix(errors=sum(r.score is None for r in rows))
    return rows


# -- reports ----------------------------------------------------------------------------------------
