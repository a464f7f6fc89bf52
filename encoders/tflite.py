"""Run a small TensorFlow Lite graph in PyTorch: the weights of a `.tflite` file, not its runtime.

MediaPipe's hand models ship only as `.tflite` (their runtime pins numpy<2 and clashes with the
stack). The file is a flatbuffer: tensors, constant buffers and a list of operators in execution
order. We read it with the `tflite` package (generated flatbuffer accessors, no runtime), fold the
float16 constants (DEQUANTIZE), and replay the operators with torch functions, so the networks run
on the same devices as everything else.

Activations have torch's NCHW shape over channels-last memory, which is TFLite's NHWC byte order:
4-D tensors cross back to NHWC (free) only where the graph reshapes or returns them. Only the operators the hand and face models
use are implemented; anything else fails at load with its name.

Shape letters: B batch, H W C image height, width, channels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tflite
import torch
import torch.nn.functional as F
from tflite.BuiltinOperator import BuiltinOperator
from tflite.BuiltinOptions import BuiltinOptions
from torch import nn

_SAME, _VALID = 0, 1  # tflite Padding
_NP_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}


@dataclass
class _Op:
    name: str
    inputs: list[int]
    outputs: list[int]
    options: dict = field(default_factory=dict)


def _activation(x: torch.Tensor, kind: int) -> torch.Tensor:
    """A fused activation, in place (x is always a fresh op output)."""
    if kind == 0:
        return x
    if kind == 1:
        return x.relu_()
    if kind == 2:
        return x.clamp_(-1, 1)
    if kind == 3:
        return x.clamp_(0, 6)
    if kind == 4:
        return x.tanh_()
    raise NotImplementedError(f"fused activation {kind}")


def _same_pad(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's SAME padding: the extra pixel, if any, goes after (bottom/right)."""
    k = (kernel - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kh: int, kw: int, sh: int, sw: int, dh: int = 1, dw: int = 1,
              value: float = 0.0) -> tuple[torch.Tensor, tuple[int, int]]:
    """(x, padding left for the op): symmetric SAME padding is left to the op itself (no copy)."""
    top, bottom = _same_pad(x.shape[2], kh, sh, dh)
    left, right = _same_pad(x.shape[3], kw, sw, dw)
    if top == bottom and left == right:
        return x, (top, left)
    return F.pad(x, (left, right, top, bottom), value=value), (0, 0)


def _options(op, tflite_mod, option_names: dict) -> dict:
    table = op.BuiltinOptions()
    if table is None:
        return {}
    cls = getattr(tflite_mod, option_names[op.BuiltinOptionsType()])
    opts = cls()
    opts.Init(table.Bytes, table.Pos)
    out = {}
    for attr in dir(opts):
        if not attr[:1].isupper() or attr in ("Init",) or attr.startswith("GetRoot") or \
                any(s in attr for s in ("AsNumpy", "Length", "IsNone", "BufferHasIdentifier")):
            continue
        try:
            out[attr] = getattr(opts, attr)()
        except TypeError:
            pass
    return out


class TFLiteGraph(nn.Module):
    """A `.tflite` model replayed with torch ops. forward(x: (B, H, W, C) float) -> list of outputs,
    in the file's output order and TFLite's layout (NHWC for 4-D)."""

    SUPPORTED = {"CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "ADD", "MEAN", "FULLY_CONNECTED", "LOGISTIC", "RELU",
                 "PRELU", "PAD", "RESIZE_BILINEAR", "RESHAPE", "CONCATENATION", "DEQUANTIZE"}

    def __init__(self, path: str | Path):
        super().__init__()
        op_names = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
        option_names = {v: k for k, v in vars(BuiltinOptions).items() if not k.startswith("_")}
        buf = Path(path).read_bytes()
        model = tflite.Model.GetRootAsModel(buf, 0)
        graph = model.Subgraphs(0)
        self.shapes: dict[int, list[int]] = {}
        consts: dict[int, np.ndarray] = {}
        for i in range(graph.TensorsLength()):
            t = graph.Tensors(i)
            self.shapes[i] = t.ShapeAsNumpy().tolist() if t.ShapeLength() else []
            data = model.Buffers(t.Buffer()).DataAsNumpy() if t.Buffer() else 0
            if isinstance(data, np.ndarray) and data.size:
                consts[i] = np.frombuffer(data.tobytes(), _NP_TYPES[t.Type()]).reshape(self.shapes[i])
        self.ops: list[_Op] = []
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex())
            name = op_names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
            if name not in self.SUPPORTED:
                raise NotImplementedError(f"{Path(path).name}: operator {name} is not implemented")
            o = _Op(name, op.InputsAsNumpy().tolist(), op.OutputsAsNumpy().tolist(),
                    _options(op, tflite, option_names))
            if name == "DEQUANTIZE" and o.inputs[0] in consts:  # float16 weights: fold once
                consts[o.outputs[0]] = consts[o.inputs[0]].astype(np.float32)
                continue
            self.ops.append(o)
        self.inputs = [graph.Inputs(j) for j in range(graph.InputsLength())]
        self.outputs = [graph.Outputs(j) for j in range(graph.OutputsLength())]
        self.output_names = [graph.Tensors(j).Name().decode() for j in self.outputs]
        self._params = nn.ParameterDict()
        used = {i for o in self.ops for i in o.inputs}
        for i in sorted(used & consts.keys()):
            value = torch.from_numpy(self._torch_layout(i, consts[i]).copy())
            if value.dim() == 4:  # oneDNN's fast depthwise and 5x5 kernels want channels-last (NHWC memory)
                value = value.contiguous(memory_format=torch.channels_last)
            self._params[str(i)] = nn.Parameter(value, requires_grad=False)

    def _torch_layout(self, index: int, value: np.ndarray) -> np.ndarray:
        """Constants rearranged once for torch: conv filters OHWI -> OIHW, depthwise 1HWC -> C1HW,
        PReLU slopes (1, 1, C) -> (C,)."""
        for o in self.ops:
            if index in o.inputs[1:2]:
                if o.name == "CONV_2D":
                    return value.transpose(0, 3, 1, 2)
                if o.name == "DEPTHWISE_CONV_2D":
                    return value.transpose(3, 0, 1, 2)
                if o.name == "PRELU":
                    return value.reshape(-1)
        return value

    def const(self, index: int) -> torch.Tensor:
        return self._params[str(index)]

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # NCHW shape over NHWC memory (channels-last): the permute copies nothing, and convolutions
        # run ~2-9x faster on the CPU than on NCHW memory (measured on both hand models)
        values: dict[int, torch.Tensor] = {self.inputs[0]: x.permute(0, 3, 1, 2)}
        get = lambda i: values[i] if i in values else self.const(i)  # noqa: E731
        for op in self.ops:
            values[op.outputs[0]] = self._run(op, get)
        return [values[i].permute(0, 2, 3, 1) if values[i].dim() == 4 else values[i] for i in self.outputs]

    def _run(self, op: _Op, get) -> torch.Tensor:
        o, x = op.options, get(op.inputs[0])
        if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            w = get(op.inputs[1])
            b = get(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
            sh, sw, dh, dw = o["StrideH"], o["StrideW"], o["DilationHFactor"], o["DilationWFactor"]
            pad = (0, 0)
            if o["Padding"] == _SAME:
                x, pad = _pad_same(x, w.shape[2], w.shape[3], sh, sw, dh, dw)
            groups = x.shape[1] if op.name == "DEPTHWISE_CONV_2D" else 1
            return _activation(F.conv2d(x, w, b, (sh, sw), pad, (dh, dw), groups), o["FusedActivationFunction"])
        if op.name == "MAX_POOL_2D":
            kh, kw, sh, sw = o["FilterHeight"], o["FilterWidth"], o["StrideH"], o["StrideW"]
            pad = (0, 0)
            if o["Padding"] == _SAME:
                x, pad = _pad_same(x, kh, kw, sh, sw, value=-math.inf)
            if pad != (0, 0):  # max_pool2d pads with -inf too, but only up to half the kernel
                x, pad = F.pad(x, (pad[1], pad[1], pad[0], pad[0]), value=-math.inf), (0, 0)
            return _activation(F.max_pool2d(x, (kh, kw), (sh, sw)), o["FusedActivationFunction"])
        if op.name == "ADD":
            return _activation(x + get(op.inputs[1]), o["FusedActivationFunction"])
        if op.name == "PRELU":
            return F.prelu(x, get(op.inputs[1]))
        if op.name == "LOGISTIC":
            return torch.sigmoid(x)
        if op.name == "RELU":
            return torch.relu(x)
        if op.name == "PAD":
            p = get(op.inputs[1]).tolist()  # NHWC pairs
            if x.dim() != 4 or p[0] != [0, 0]:
                raise NotImplementedError("PAD outside H, W, C")
            return F.pad(x, (p[2][0], p[2][1], p[1][0], p[1][1], p[3][0], p[3][1]))
        if op.name == "RESIZE_BILINEAR":
            size = get(op.inputs[1]).tolist()
            if not (o["AlignCorners"] or o["HalfPixelCenters"]):
                raise NotImplementedError("RESIZE_BILINEAR with TensorFlow 1's legacy pixel centres")
            return F.interpolate(x, size=size, mode="bilinear", align_corners=bool(o["AlignCorners"]))
        if op.name == "RESHAPE":
            if x.dim() == 4:
                x = x.permute(0, 2, 3, 1)
            shape = self.shapes[op.outputs[0]]
            return x.reshape(x.shape[0], *shape[1:])
        if op.name == "CONCATENATION":
            parts = [get(i) for i in op.inputs]
            axis = o["Axis"] % len(self.shapes[op.outputs[0]])
            if parts[0].dim() == 4:
                axis = {0: 0, 1: 2, 2: 3, 3: 1}[axis]
            return _activation(torch.cat(parts, axis), o["FusedActivationFunction"])
        if op.name == "MEAN":
            axes = [a % 4 for a in get(op.inputs[1]).tolist()]
            if x.dim() != 4 or sorted(axes) != [1, 2]:
                raise NotImplementedError("MEAN other than over H and W")
            return x.mean((2, 3), keepdim=bool(o["KeepDims"]))
        if op.name == "FULLY_CONNECTED":
            b = get(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
            return _activation(F.linear(x.reshape(x.shape[0], -1), get(op.inputs[1]), b),
                               o["FusedActivationFunction"])
        raise NotImplementedError(op.name)
