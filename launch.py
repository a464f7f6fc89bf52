"""pocket-omni's command line.

    python launch.py                      the web UI on the default model (http://127.0.0.1:7860)
    python launch.py ask [--image P] [--audio P] [--mode e2e|cascade] "question"
    python launch.py eval SUITE.jsonl [--out DIR] [--mode e2e|cascade] [--server URL]
    python launch.py compare A/report.json B/report.json [--out DIR]
    python launch.py serve [--port 8000]  the OpenAI-compatible API alone (the UI serves it too, at /v1)
    python launch.py suites               rebuild the evaluation suites' media (deterministic)
    python launch.py bench hands          hand-tracking frames/s on 640x480 video (tracking vs detect-every-frame)
    python launch.py bench decode         decode/prefill tokens/s vs transformers generate() (and --llama-bench PATH), bandwidth limit, TTFT
    python launch.py bench kernels        Triton attention kernels vs SDPA's flash backend (a GPU)
    python launch.py bench live           live mode: frame -> annotated frame latency and frames/s (in process, via server)
    python launch.py bench gate           time to first token with the mushroom safety gate vs without
    python launch.py bench api            20 concurrent API clients x 3 requests: all answered, p50/p95, memory
    python launch.py train audio|vision   train a projector (towers and decoder frozen), install it in assets/
    python launch.py fetch [--all-models] fetch, verify and convert the model's weights (every preset's)

Every command takes --model qwen-1.5b|qwen-0.5b|smollm-135m (fusion/presets.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from encoders.errors import InputError
from fusion.modes import DEFAULT_MODE, MODES
from fusion.presets import DEFAULT_PRESET, MODEL_ENV, PRESETS, TINY_PRESET
from fusion.weights.fetch import WeightError

# Each command imports what it needs when it runs: torch and transformers take ~6 s to import here and
# gradio ~6 s more (measured with `python -c "import app.ui"`), which `fetch`, `suites`, `compare` and
# `--help` should not pay.


def _sampling(args):
    from fusion.runtime.generate import SamplingConfig

    return SamplingConfig(max_new_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                          seed=args.seed)


def cmd_fetch(args) -> int:
    from fusion.presets import PRESETS, preset
    from fusion.weights.default import ensure_default_weights

    for name in PRESETS if args.all_models else [preset().name]:
        w = ensure_default_weights(model=PRESETS[name])
        print(f"{name}: weights ready ({w.decoder})")
    from fusion.runtime import cpu_ops  # compile the C++ decode ops now, not at the first answer

    ops = cpu_ops.load()
    print("C++ decode ops:", "ready" if ops is not None else f"not used ({cpu_ops.unavailable_reason() or 'build failed'})")
    return 0


def cmd_ask(args) -> int:
    from app.safety import guard
    from fusion.assistant import Assistant, Timings, validate_conversation
    from fusion.prompt import user_content

    # Read the media first: a bad file is reported before minutes of model loading.
    content = user_content(args.question, args.image, args.audio, args.max_audio_seconds)
    sampling = _sampling(args)  # bad settings are reported before the model loads too
    messages = [{"role": "system", "content": args.system}] if args.system else []
    messages.append({"role": "user", "content": content})
    validate_conversation(messages, args.mode)
    t0 = time.perf_counter()
    assistant = guard(Assistant.load_default())
    load_s = time.perf_counter() - t0
    timings = Timings()
    for piece in assistant.chat(messages, args.mode, sampling, timings):
        print(piece, end="", flush=True)
    print()
    for note in timings.notes:
        print(f"[{args.mode}] {note}", file=sys.stderr)
    if args.stats:
        decode_s = timings.total_s - (timings.first_token_s or timings.total_s)
        rate = (timings.new_tokens - 1) / decode_s if decode_s > 0 and timings.new_tokens > 1 else float("nan")
        print(f"[stats] load {load_s:.1f} s, encode {timings.encode_s:.2f} s, first token "
              f"{timings.first_token_s or 0:.2f} s, {timings.new_tokens} tokens in {timings.total_s:.2f} s, "
              f"decode {rate:.1f} tokens/s", file=sys.stderr)
    return 0


def _api_config(args):
    from app.api import ApiConfig

    return ApiConfig(api_key=args.api_key or os.environ.get("POCKET_OMNI_API_KEY"),
                     local_files=Path(args.allow_local_files) if args.allow_local_files else None,
                     max_body_bytes=int(args.max_body_mb * 1024 * 1024))


def cmd_ui(args) -> int:
    from app.api import serve
    from app.chat import ModelHolder
    from app.ui import build
    from fusion.assistant import Assistant

    holder = ModelHolder(Assistant.load_default)
    print(f"pocket-omni: UI and API on http://{args.host}:{args.port} (model loading in the background)", flush=True)
    serve(holder, args.host, args.port, _api_config(args), ui=build(holder).queue(default_concurrency_limit=4))
    return 0


def cmd_serve(args) -> int:
    from app.api import serve
    from app.chat import ModelHolder
    from fusion.assistant import Assistant

    holder = ModelHolder(Assistant.load_default)
    print(f"pocket-omni: API on http://{args.host}:{args.port}/v1", flush=True)
    serve(holder, args.host, args.port, _api_config(args))
    return 0


def cmd_eval(args) -> int:
    from app.eval_report import summarize, summary_table, write_report
    from app.evaluation import local_runner, run_suite, server_runner

    suite = Path(args.suite)
    if not suite.is_file():
        print(f"error: no such suite: {suite}", file=sys.stderr)
        return 2
    sampling = _sampling(args)
    if args.server:
        runner, kind = server_runner(args.server, sampling, args.api_key), f"server {args.server}"
    else:
        from fusion.assistant import Assistant

        runner, kind = local_runner(Assistant.load_default(), sampling), "in-process"
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rows = run_suite(suite, runner, args.mode, progress=not args.quiet, limit=args.limit)
    out = Path(args.out or Path("out") / "eval" / f"{suite.stem}-{args.mode}")
    write_report(rows, out, {"suite": str(suite), "mode": args.mode, "runner": kind, "started": started,
                             "max_tokens": args.max_tokens})
    print(summary_table(summarize(rows)))
    print(f"report: {out / 'report.json'} and {out / 'report.md'}")
    return 0


def cmd_compare(args) -> int:
    from app.eval_report import compare_reports

    out = Path(args.out)
    print(compare_reports(Path(args.a), Path(args.b), out))
    print(f"written: {out / 'compare.md'} and {out / 'compare.png'}")
    return 0


def cmd_train(args) -> int:
    from app.projector_training import train

    train(args.modality, steps=args.steps, batch_size=args.batch_size, variants=args.variants, seed=args.seed,
          work=Path(args.work) if args.work else None, rebuild_data=args.rebuild_data, install=not args.no_install,
          objective=args.objective, lr=args.lr, mentions=args.mentions, vocabulary_words=args.vocabulary_words,
          recipe_name=args.recipe)
    return 0


def cmd_suites(args) -> int:
    from app.suites import build

    build()
    return 0


def cmd_bench(args) -> int:
    from app.bench_timing import print_figures
    from fusion.presets import preset

    if args.what == "decode" and preset().weights == "gguf":
        from app.bench_quant import bench_quant

        print_figures(bench_quant(preset(), args.llama_bench, args.threads))
    elif args.what in ("decode", "kernels"):
        from app.bench_decode import bench_decode, bench_kernels

        print_figures(bench_kernels(small=args.small) if args.what == "kernels" else bench_decode(threads=args.threads))
    elif args.what == "api":
        from app.bench_api import bench_api

        print_figures(bench_api())
    elif args.what == "listen":
        from app.bench_listen import bench_listen

        print_figures(bench_listen())
    elif args.what == "page":
        from app.bench_page import bench_page

        print_figures(bench_page())
    else:
        from app.bench import bench_gate, bench_hands, bench_live

        print_figures({"hands": lambda: bench_hands(args.frames, args.threads, args.hand_model),
                       "live": lambda: bench_live(args.frames, args.threads),
                       "gate": bench_gate}[args.what]())
    return 0


def _server_options(p: argparse.ArgumentParser, suppress: bool = False) -> None:
    """The serving options, accepted before or after the command (`launch.py serve --port 8123`)."""
    default = (lambda value: argparse.SUPPRESS) if suppress else (lambda value: value)
    p.add_argument("--host", default=default("127.0.0.1"))
    p.add_argument("--port", type=int, default=default(7860))
    p.add_argument("--api-key", default=default(None), help="require this bearer key on /v1 (or POCKET_OMNI_API_KEY)")
    p.add_argument("--max-body-mb", type=float, default=default(25.0), help="largest API request accepted")
    p.add_argument("--allow-local-files", metavar="DIR", default=default(None),
                   help="let image_url name files inside this one folder (default: none; send data URLs)")


def _sampling_options(p: argparse.ArgumentParser, max_tokens: int) -> None:
    p.add_argument("--max-tokens", type=int, default=max_tokens)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)


def _eval_parser(sub) -> None:
    ev = sub.add_parser("eval", help="run an evaluation suite (JSONL) and write report.json/report.md")
    ev.add_argument("suite")
    ev.add_argument("--out", default=None, help="report folder (default out/eval/SUITE-MODE)")
    ev.add_argument("--mode", choices=MODES, default="e2e")
    ev.add_argument("--server", default=None, help="run against a server, e.g. http://127.0.0.1:8000")
    ev.add_argument("--limit", type=int, default=None, help="only the first N cases")
    _sampling_options(ev, 64)
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    _server_options(ev, suppress=True)  # --api-key for --server


def _train_parser(sub) -> None:
    tr = sub.add_parser("train", help="train a projector (encoders and decoder frozen) and install it in assets/")
    tr.add_argument("modality", choices=["audio", "vision"])
    tr.add_argument("--steps", type=int, default=500)
    tr.add_argument("--batch-size", type=int, default=8)
    tr.add_argument("--variants", type=int, default=8, help="spoken versions of each training sentence")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--work", default=None, help="data and checkpoints (default $POCKET_OMNI_CACHE/train)")
    tr.add_argument("--objective", choices=["ctc", "distill"], default=None,
                    help="ctc: transcripts by CTC over the decoder's embedding table (audio; the default for audio); "
                         "distill: the decoder's own answers through the frozen decoder (Ultravox; vision's only)")
    tr.add_argument("--lr", type=float, default=None, help="peak learning rate (default: 2e-3 for ctc, 1e-3 for distill)")
    tr.add_argument("--vocabulary-words", type=int, default=0,
                    help="audio (ctc): also the decoder's ids of this many frequent English words in the readout's "
                         "vocabulary (fortunes and manual pages; 0: the training transcripts' ids only)")
    tr.add_argument("--mentions", type=int, default=0,
                    help="audio: also speak N sentences naming the questions' entities")
    tr.add_argument("--recipe", choices=["r3", "r4", "r5"], default="r4",
                    help="audio data: r4 every English espeak-ng voice and variant and Festival's (the shipped Qwen "
                         "readout's); r5 r4's voices with open-vocabulary text (WordNet's examples, generated "
                         "everyday sentences; worse at the same budget, see the model card); r3 the 21 espeak "
                         "voices of the SmolLM2 readout (r2 with --mentions 0)")
    tr.add_argument("--rebuild-data", action="store_true")
    tr.add_argument("--no-install", action="store_true", help="do not copy the weights into assets/projectors")


def _bench_parser(sub) -> None:
    be = sub.add_parser("bench", help="print speed figures (hand tracking, live mode, decoding, the safety gate)")
    be.add_argument("what", choices=["hands", "live", "decode", "kernels", "gate", "api", "listen", "page"])
    be.add_argument("--small", action="store_true", help="kernels: toy sizes (a check of the benchmark, e.g. under "
                                                          "TRITON_INTERPRET=1 on a CPU)")
    be.add_argument("--frames", type=int, default=120)
    be.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    be.add_argument("--hand-model", choices=["lite", "full"], default="lite")
    be.add_argument("--llama-bench", metavar="PATH", default=None,
                    help="decode with a GGUF model: also run llama.cpp's llama-bench on the same file "
                         "(app/build_llama_bench.sh builds it)")


def _ask_parser(sub) -> None:
    ask = sub.add_parser("ask", help="answer one question about images, recordings and text")
    ask.add_argument("question", nargs="?", default="", help="the question (optional with --audio)")
    ask.add_argument("--image", action="append", default=[], help="a photo (repeatable)")
    ask.add_argument("--audio", action="append", default=[], help="a recording: wav, flac, mp3, ogg (repeatable)")
    ask.add_argument("--mode", choices=MODES, default=DEFAULT_MODE,
                     help="e2e: media embeddings into the LLM; cascade: Whisper transcript + ImageNet labels as text; "
                          "auto: speech transcribed, images as embeddings")
    ask.add_argument("--system", default=None, help="a system prompt or persona")
    _sampling_options(ask, 256)
    ask.add_argument("--max-audio-seconds", type=float, default=600.0)
    ask.add_argument("--stats", action="store_true", help="print load time, time to first token and tokens/s")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="launch.py", description="pocket-omni: a local camera-and-microphone assistant")
    parser.add_argument("-v", "--verbose", action="store_true", help="log model loading and dispatch decisions")
    _server_options(parser)
    sub = parser.add_subparsers(dest="command")
    fetch = sub.add_parser("fetch", help="fetch, verify and convert the selected model's weights (once)")
    fetch.add_argument("--all-models", action="store_true", help="every preset's (about 1.7 GB in all)")
    _server_options(sub.add_parser("serve", help="serve the OpenAI-compatible API (POST /v1/chat/completions)"),
                    suppress=True)
    sub.add_parser("suites", help="rebuild the shipped evaluation suites and their media")
    _eval_parser(sub)
    _train_parser(sub)
    _bench_parser(sub)
    cmp_ = sub.add_parser("compare", help="compare two report.json files (table + PNG plot)")
    cmp_.add_argument("a")
    cmp_.add_argument("b")
    cmp_.add_argument("--out", default="out/compare")
    _ask_parser(sub)
    for p in [parser, *sub.choices.values()]:  # --model before or after the command
        p.add_argument("--model", choices=list(PRESETS), default=None if p is parser else argparse.SUPPRESS,
                       help=f"the decoder (default {DEFAULT_PRESET}, or ${MODEL_ENV}; {TINY_PRESET}: the tiny one)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.model:
        os.environ[MODEL_ENV] = args.model  # every loader reads it (fusion/presets.py)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    commands = {"fetch": cmd_fetch, "ask": cmd_ask, "eval": cmd_eval, "compare": cmd_compare, "serve": cmd_serve,
                "suites": cmd_suites, "train": cmd_train, "bench": cmd_bench, None: cmd_ui}
    try:
        return commands[args.command](args)
    except (InputError, WeightError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
