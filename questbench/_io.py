"""File helpers with no torch in them: atomic writes, sha256, output-path checks (used by the results store and
the reports, which must not import torch)."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from .errors import QuestbenchError


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; results are ordinary files
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_creatable(path: str | Path, what: str) -> None:
    """The nearest existing ancestor of ``path`` is a writable folder, so ``path`` can be made below it."""
    probe = Path(path)
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise QuestbenchError(f"{what} {path}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise QuestbenchError(f"{what} {path}: {probe} is not writable")


def check_output_file(path: str | Path) -> Path:
    """An output file path that can be written: not a folder, its parent a folder (created if missing)."""
    p = Path(path)
    if p.is_dir():
        raise QuestbenchError(f"output {p} is a folder; give a file name")
    check_creatable(p.parent, "output")
    return p
