"""Reusing another folder's finished jobs (`questbench run --reuse OLD`): a suite that gains an attack, or a study
whose suite changes one endpoint, need not compute again what it already has.

A job is reused only when the other folder holds the same job id with the same identity hash, the hash of
everything that determines its rows (checkpoint sha256 and architecture, dataset content and sample ids, the
evaluation's full configuration, seed, precision, batch size, device kind, library versions): the exact
configuration that made it. Its file is read with every check a results folder gets (schema, the other folder's
plan, outcomes, digest), then written here with a header built from this run's plan (this suite's sha256, the
sweep's index in this suite), its measured fields kept (wall time, flags, the configuration that ran) and
``reused_from`` naming the folder and suite it came from. Nothing else is carried over.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import QuestbenchError
from ..kinds import Job
from ..store.results import JOBS_DIR, job_done, job_file, load_provenance, read_job_file, write_job
from .merge import part_file
from .prepare import Prepared
from .provenance import job_header


def check_sources(sources: Sequence[Path], out: Path) -> dict[Path, dict]:
    """Each folder to reuse from with its provenance, read once and intact (one clear line otherwise)."""
    checked = {}
    for src in map(Path, sources):
        if not (src / JOBS_DIR).is_dir():
            raise QuestbenchError(f"--reuse {src}: not a questbench results folder (it has no {JOBS_DIR}/)")
        if src.resolve() == Path(out).resolve():
            raise QuestbenchError(f"--reuse {src} is the --out folder itself (a run resumes its own jobs already)")
        prov, problem = load_provenance(src)
        if problem is not None:
            raise QuestbenchError(f"--reuse {src}: {problem}; its jobs cannot be checked, so none is reused")
        checked[src] = prov
    return checked


def _reusable(out: Path, jobs: Sequence[Job], src: Path, prov: dict) -> list[Job]:
    """The planned jobs not yet done in ``out`` that the source's plan holds with the same identity hash and whose
    file it has."""
    planned = prov.get("jobs", {})
    return [job for job in jobs if planned.get(job.job_id) == job.key_sha256 and
            not job_done(out, job.job_id) and job_file(src, job.job_id).is_file()]


def count_reusable(out: Path, jobs: Sequence[Job], sources: dict[Path, dict]) -> int:
    """How many planned jobs a run would copy from ``sources`` (before anything is copied)."""
    return len({job.job_id for src, prov in sources.items() for job in _reusable(out, jobs, src, prov)})


def reuse_jobs(out: Path, p: Prepared, jobs: Sequence[Job], sources: dict[Path, dict]) -> list[str]:
    """Copy into ``out`` every planned job not yet done there that a source folder holds with the same identity
    hash (the first source that has it); returns one note per source that gave any."""
    notes = []
    for src, prov in sources.items():
        found = _reusable(out, jobs, src, prov)
        for job in found:
            try:
                doc = read_job_file(job_file(src, job.job_id), prov)
            except QuestbenchError as exc:
                raise QuestbenchError(f"--reuse {src}: {exc}") from None
            old = doc["job"]
            header = job_header(p, job, old.get("wall_s", 0.0), old.get("flags", []), old.get("config"))
            header["reused_from"] = {"folder": str(src), "suite_sha256": old["suite_sha256"]}
            write_job(out, job.job_id, header, doc["records"])
            for a, b in job.spans():  # parts an interrupted run of this folder left for it are superseded
                part_file(out, job.job_id, a, b).unlink(missing_ok=True)
        if found:
            notes.append(f"{len(found)} job(s) reused from {src} (same identity hash: the configuration that made "
                         "them)")
    return notes
