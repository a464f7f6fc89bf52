"""pocket-omni's command line.

    python launch.py                      the web UI on the default model (http://127.0.0.1:7860)
    python launch.py ask [--image P] [--audio P] [--mode e2e|cascade] "question"
    python launch.py fetch                fetch, verify and convert the default weights
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time


def _sampling(args):
    from fusion.generate import SamplingConfig

    return SamplingConfig(max_new_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                          seed=args.seed)


def cmd_fetch(args) -> int:
    from fusion.weights import ensure_default_weights

    w = ensure_default_weights()
    print(f"default weights ready in {w.decoder_dir.parent}")
    return 0


def cmd_ask(args) -> int:
    from encoders.audio import load_audio
    from encoders.vision import load_image
    from fusion.assistant import Assistant, Timings, validate_conversation
    from fusion.prompt import Audio, Image

    # Read the media first: a bad file is reported before minutes of model loading.
    content: list = [Image(load_image(p), os.path.basename(p)) for p in args.image]
    content += [Audio(load_audio(p, args.max_audio_seconds), os.path.basename(p)) for p in args.audio]
    if args.question:
        content.append(args.question)
    messages = [{"role": "user", "content": content}]
    validate_conversation(messages, args.mode)
    t0 = time.perf_counter()
    assistant = Assistant.load_default()
    load_s = time.perf_counter() - t0
    timings = Timings()
    for piece in assistant.chat(messages, args.mode, _sampling(args), timings):
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


def cmd_ui(args) -> int:
    from app.ui import serve

    serve(host=args.host, port=args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="launch.py", description="pocket-omni: a local camera-and-microphone assistant")
    parser.add_argument("-v", "--verbose", action="store_true", help="log model loading and dispatch decisions")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    sub = parser.add_subparsers(dest="command")

    sub.add_parser("fetch", help="fetch, verify and convert the default weights (once)")

    ask = sub.add_parser("ask", help="answer one question about images, recordings and text")
    ask.add_argument("question", nargs="?", default="", help="the question (optional with --audio)")
    ask.add_argument("--image", action="append", default=[], help="a photo (repeatable)")
    ask.add_argument("--audio", action="append", default=[], help="a recording: wav, flac, mp3, ogg (repeatable)")
    ask.add_argument("--mode", choices=["e2e", "cascade"], default="e2e",
                     help="e2e: media embeddings into the LLM; cascade: Whisper transcript + ImageNet labels as text")
    ask.add_argument("--max-tokens", type=int, default=256)
    ask.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    ask.add_argument("--top-p", type=float, default=1.0)
    ask.add_argument("--seed", type=int, default=None)
    ask.add_argument("--max-audio-seconds", type=float, default=600.0)
    ask.add_argument("--stats", action="store_true", help="print load time, time to first token and tokens/s")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from encoders.errors import InputError
    from fusion.weights import WeightError

    commands = {"fetch": cmd_fetch, "ask": cmd_ask, None: cmd_ui}
    try:
        return commands[args.command](args)
    except (InputError, WeightError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
