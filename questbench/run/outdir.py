"""Claiming an output folder for a run: it must be a folder we can write, used by no other run at the same
time, and hold either nothing or results of exactly this run's configuration.

A folder of another configuration is refused with one line naming the difference; with ``overwrite`` it is
moved aside (``<out>.replaced-<time>``), never mixed with the new results.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from ..errors import QuestbenchError
from .._io import check_creatable
from ..store.combine import describe_difference
from ..store.results import JOBS_DIR, PROVENANCE, STORE_FORMAT, job_file, load_provenance, read_job_file


def check_writable(out: Path) -> None:
    """Before anything loads: ``out`` is (or can become) a writable folder."""
    out = Path(out)
    if out.is_symlink() and not out.exists():
        raise QuestbenchError(f"--out {out} is a symbolic link to nothing (a missing target or a loop)")
    if out.exists() and not out.is_dir():
        raise QuestbenchError(f"--out {out} exists and is not a folder")
    check_creatable(out, "--out")
    from .merge import SHARDS_DIR
    for name in (JOBS_DIR, SHARDS_DIR, LAUNCHER_LOGS, PROVENANCE, DAMAGED_DIR):  # a planted link would redirect our writes
        if (out / name).is_symlink():
            raise QuestbenchError(f"--out {out}: {name} is a symbolic link; questbench writes nothing through a "
                                  "link (remove it)")
    if out.is_dir() and _holds_anything(out) and not _is_results_folder(out):
        raise QuestbenchError(f"--out {out} is a non-empty folder that holds no questbench results; "
                              "choose an empty or new folder")


LAUNCHER_LOGS = ".ranks"  # the rank launcher's own files (`questbench run --ranks N`), made before any results


def _holds_anything(out: Path) -> bool:
    return any(p.name != LAUNCHER_LOGS for p in out.iterdir())


def _is_results_folder(out: Path) -> bool:
    return (out / PROVENANCE).is_file() or (out / JOBS_DIR).is_dir()


def _unused(base: Path) -> Path:
    """``<base>-<time>``, or ``<base>-<time>-<n>`` with the first n that names nothing yet (not even a link)."""
    stamp = f"{base}-{time.strftime('%Y%m%d-%H%M%S')}"
    target, n = Path(stamp), 1
    while target.exists() or target.is_symlink():
        target, n = Path(f"{stamp}-{n}"), n + 1
    return target


def _move_aside(out: Path) -> Path:
    target = _unused(out.with_name(f"{out.name}.replaced"))
    out.rename(target)
    return target


def claim(out: Path, run_config: dict[str, Any], planned_ids: set[str], overwrite: bool = False) -> str:
    """Check ``out`` against this run; returns a note ('' or where old results were moved)."""
    out = Path(out)
    if not out.exists() or not _holds_anything(out):
        return ""
    if not _is_results_folder(out):
        raise QuestbenchError(f"--out {out} is a non-empty folder that holds no questbench results; "
                              "choose an empty or new folder")
    reason = ""
    foreign = sorted(f.name for f in (out / JOBS_DIR).glob("*.json") if f.stem not in planned_ids) \
        if (out / JOBS_DIR).is_dir() else []
    old, problem = load_provenance(out)
    if problem is not None:
        # a missing, damaged or edited provenance is rebuilt by this run when every job file is one it planned
        # (a job's file name ends in its identity hash; each file is checked again when it is read)
        if foreign or not (out / JOBS_DIR).is_dir():
            reason = "its provenance.json is missing or damaged and it holds results this run did not plan"
    else:
        if old.get("format") != STORE_FORMAT:
            reason = "its results were written by another questbench version"
        elif old.get("run_config") != run_config:
            reason = f"it holds another configuration ({describe_difference(old.get('run_config', {}), run_config)})"
        elif foreign:
            reason = f"it holds {len(foreign)} job file(s) this run did not plan, e.g. {foreign[0]}"
    if not reason:
        return ""
    if not overwrite:
        raise QuestbenchError(f"--out {out}: {reason}; use another --out, or --overwrite to move the old "
                              "results aside")
    return f"old results moved to {_move_aside(out)}"


@contextlib.contextmanager
def exclusive(out: Path) -> Iterator[None]:
    """One run per folder at a time: an OS lock on the folder itself, released when the process ends, even by
    SIGKILL. A folder this run created is removed again if the run ends before writing anything into it."""
    out = Path(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    key = str(out.resolve())
    if (key, threading.get_ident()) in _HELD or _held_by_launcher(key):  # held here, or by this rank's launcher
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no concurrent-run guard
        fcntl = None
    fd = os.open(out, os.O_RDONLY)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise QuestbenchError(f"--out {out} is in use by another questbench run; wait for it or use "
                                      "another --out") from None
        _HELD.add((key, threading.get_ident()))
        yield
    except BaseException:
        if created and out.is_dir() and not _holds_anything(out):
            out.rmdir()
        raise
    finally:
        _HELD.discard((key, threading.get_ident()))
        os.close(fd)


_HELD: set[tuple[str, int]] = set()  # (folder, thread) holding its lock: a nested claim does not lock itself out


def _held_by_launcher(key: str) -> bool:
    """The rank launcher holds the folder for the ranks it started (from before their launch to after the last
    one ends, so a second run cannot slip in between)."""
    from .distributed import HELD_ENV, launched_by
    return os.environ.get(HELD_ENV) == key and launched_by() == os.getppid()


@contextlib.contextmanager
def claimed(out: Path, run_config: dict[str, Any], planned_ids: set[str], overwrite: bool = False) -> Iterator[str]:
    """The one place a folder is claimed: locked, checked against this run (old results of another
    configuration moved aside with ``overwrite``), and held while the block runs. Yields the note ('' or where
    the old results went)."""
    with exclusive(out):
        moved = claim(out, run_config, planned_ids, overwrite)
        with exclusive(out) if moved else contextlib.nullcontext():  # the folder was moved: lock the new one
            yield moved


DAMAGED_DIR = "damaged"  # job files a run found it could not trust, kept for a look and redone


def set_aside_damaged(out: Path, job_ids, provenance: dict[str, Any]) -> list[str]:
    """Every planned job file that is there but cannot be trusted (edited, truncated, a folder in its place) is
    moved to ``out/damaged/`` so that the run redoes the job instead of skipping it (it exists) or refusing the
    folder. One note per file, with the reason."""
    notes = []
    for job_id in job_ids:
        f = job_file(out, job_id)
        if not (f.exists() or f.is_symlink()):
            continue
        try:
            if f.is_symlink() or not f.is_file():
                raise QuestbenchError(f"{f} is not a plain file")
            read_job_file(f, provenance)
            continue
        except QuestbenchError as exc:
            reason = str(exc)
        target = _unused(out / DAMAGED_DIR / f.name)  # damaged/ itself is no link: check_writable refused one
        target.parent.mkdir(exist_ok=True)
        f.rename(target)
        notes.append(f"job {job_id} redone, its file moved to {target}: {reason}")
    return notes
