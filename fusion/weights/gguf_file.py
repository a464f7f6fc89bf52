"""A GGUF file read in place: its metadata and its tensors as views of one memory map (no copy).

The `gguf` package's reader builds a NumPy view per vocabulary string and merge (~300,000 of them)
and takes 20-30 s to open a Qwen file here; this one skips the arrays it is not asked for and opens
the same file in ~0.1 s. Layout (GGUF v3, little-endian): magic, version, tensor count, metadata
count; metadata as (key, type, value); tensor infos as (name, dims, type, offset); tensor data from
the first multiple of `general.alignment` (default 32) after the infos.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# metadata value types -> struct format (strings and arrays are handled apart)
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
# tensor types -> (values per block, bytes per block); ggml's type ids
BLOCKS = {0: (1, 4), 1: (1, 2), 6: (32, 22), 8: (32, 34), 12: (256, 144), 14: (256, 210)}
TYPE_NAMES = {0: "F32", 1: "F16", 6: "Q5_0", 8: "Q8_0", 12: "Q4_K", 14: "Q6_K"}


@dataclass(frozen=True)
class Tensor:
    name: str
    kind: int  # ggml type id (TYPE_NAMES)
    shape: tuple[int, ...]  # NumPy order: (rows, cols) for a matrix
    data: np.ndarray  # uint8 view of its bytes in the memory map

    @property
    def kind_name(self) -> str:
        return TYPE_NAMES.get(self.kind, str(self.kind))


class GGUFFile:
    def __init__(self, path: str | Path, arrays: tuple[str, ...] = ()):
        """`arrays`: metadata arrays to read (e.g. "tokenizer.ggml.tokens"); others are skipped."""
        self.path = Path(path)
        self.map = np.memmap(self.path, dtype=np.uint8, mode="c")  # copy-on-write: torch views need a writable array; nothing writes
        buf = memoryview(self.map)
        if bytes(buf[:4]) != b"GGUF":
            raise ValueError(f"{self.path} is not a GGUF file")
        version, n_tensors, n_meta = struct.unpack_from("<IQQ", buf, 4)
        if version < 2:
            raise ValueError(f"{self.path}: GGUF version {version} is not supported")
        at = 24
        self.metadata: dict[str, object] = {}
        for _ in range(n_meta):
            key, at = _string(buf, at)
            (vtype,), at = struct.unpack_from("<I", buf, at), at + 4
            value, at = _value(buf, at, vtype, key in arrays)
            self.metadata[key] = value
        infos = []
        for _ in range(n_tensors):
            name, at = _string(buf, at)
            (ndim,), at = struct.unpack_from("<I", buf, at), at + 4
            dims = struct.unpack_from(f"<{ndim}Q", buf, at)
            at += 8 * ndim
            kind, offset = struct.unpack_from("<IQ", buf, at)
            at += 12
            infos.append((name, kind, tuple(reversed(dims)), offset))
        align = int(self.metadata.get("general.alignment", 32))
        start = (at + align - 1) // align * align
        self.tensors: dict[str, Tensor] = {}
        for name, kind, shape, offset in infos:
            if kind not in BLOCKS:
                raise ValueError(f"{self.path}: tensor {name} has block type {kind}, which this reader does not know")
            per, size = BLOCKS[kind]
            nbytes = int(np.prod(shape)) // per * size
            self.tensors[name] = Tensor(name, kind, shape, self.map[start + offset:start + offset + nbytes])

    def get(self, key: str, default=None):
        return self.metadata.get(key, default)


def _string(buf, at: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<Q", buf, at)
    return bytes(buf[at + 8:at + 8 + n]).decode("utf-8", errors="replace"), at + 8 + n


def _value(buf, at: int, vtype: int, keep: bool):
    if vtype in _SCALARS:
        fmt = "<" + _SCALARS[vtype]
        return struct.unpack_from(fmt, buf, at)[0], at + struct.calcsize(fmt)
    if vtype == _STRING:
        return _string(buf, at)
    if vtype == _ARRAY:
        etype, n = struct.unpack_from("<IQ", buf, at)
        at += 12
        if etype in _SCALARS:  # fixed width: skipped or read in one go
            width = struct.calcsize(_SCALARS[etype])
            values = list(struct.unpack_from(f"<{n}{_SCALARS[etype]}", buf, at)) if keep else None
            return values, at + n * width
        values = [] if keep else None
        for _ in range(n):
            v, at = _value(buf, at, etype, keep)
            if keep:
                values.append(v)
        return values, at
    raise ValueError(f"unknown GGUF metadata type {vtype}")
