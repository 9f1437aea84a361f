"""File helpers with no torch in them: atomic writes, sha256, output-path checks, TOML parsing (used by the results
store, the reports and the configuration, which must not import torch)."""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import tomllib
from pathlib import Path

from .errors import QuestbenchError


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]{0,99}")


def config_hash(obj) -> str:
    """sha256 of a canonical JSON rendering (sorted keys, no whitespace): equal configurations, equal hashes."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def slug(text: str) -> str:
    """``text`` with every run of other characters than letters, digits and ``._=+-`` made one ``_``."""
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text).strip("_")


def safe_name(name: str) -> str:
    """A file name for a name a user gave: the name itself when it is a plain one (letters, digits, ``._+=-``, not
    starting with a dot), else a slug of it plus a hash of the whole name, so that it is never a path, never
    hidden, and two names never share a file ("w a" and "w_a" differ)."""
    name = str(name)
    if _SAFE_NAME.fullmatch(name) and ".." not in name:
        return name
    stem = slug(name).strip("._")[:60] or "name"
    return f"{stem}-{hashlib.sha256(name.encode()).hexdigest()[:10]}"


def check_no_symlink(path: Path, within: Path) -> None:
    """No component of ``path`` below the folder ``within`` is a symbolic link (a link planted in a results or
    output folder would redirect a write to its target)."""
    path, within = Path(path), Path(within)
    try:
        rel = path.relative_to(within)
    except ValueError:
        raise QuestbenchError(f"{path} is not inside {within}") from None
    probe = within
    for part in rel.parts:
        probe = probe / part
        if probe.is_symlink():
            raise QuestbenchError(f"{probe} is a symbolic link; questbench writes no file through a link "
                                  "(remove it)")


def atomic_write_bytes(path: Path, data: bytes, within: Path | None = None) -> None:
    """Write ``path`` in one rename (readers see the old file or the new one, never half of one); the rename
    replaces a link at ``path`` instead of writing through it. ``within``: also refuse a link in any folder
    between ``within`` and ``path``."""
    path = Path(path)
    if within is not None:
        check_no_symlink(path, within)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; results are ordinary files
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is None:  # a write error (a full disk) names no file: name the one being written
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise
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


def parse_toml(text: str, what: str) -> dict:
    """TOML text as a mapping; a file that is not TOML, or nests deeper than Python's recursion limit, is one
    error line naming ``what``."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise QuestbenchError(f"{what} is not valid TOML: {exc}") from None
    except RecursionError:
        raise QuestbenchError(f"{what} nests arrays or tables too deeply to read") from None
