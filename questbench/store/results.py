"""The results store: one JSON file per finished job (written atomically) and one provenance document per run.

Layout of an output folder::

    <out>/provenance.json             the run's configuration (suite, sha256s, versions, limit, device), the
                                      planned jobs with their identity hashes, sample ids
    <out>/jobs/<job id>.json          {"job": {...identity, config, wall time, flags...}, "records": [rows]}

A job's id ends in the hash of everything that determines its rows (checkpoint sha256, dataset content and
sample ids, evaluation config, seed, precision, batch size, device kind, library versions), so a job is done
only when a file of exactly that configuration exists. A folder holds one run configuration: the runner
refuses to mix in another, and ``load_results`` refuses job files that are foreign to the folder's plan,
damaged, or incomplete. Every aggregate is computed from the per-sample rows, never stored.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import pandas as pd
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr, TypeAdapter, ValidationError, field_validator

from ..errors import QuestbenchError
from ..kinds import KINDS
from .schema import Provenance
from .._io import atomic_write_bytes, config_hash

JOBS_DIR = "jobs"
PROVENANCE = "provenance.json"
STORE_FORMAT = 3  # bumped whenever the meaning of a job file changes; older folders are refused, not misread
SAMPLE_COLUMNS = ["model", "attention", "pair", "evaluation", "setting", "corruption", "severity", "attack",
                  "norm", "eps", "sweep", "sample_id", "label", "pred", "correct"]


def job_file(out: Path, job_id: str) -> Path:
    return Path(out) / JOBS_DIR / f"{job_id}.json"


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(Path(path), (json.dumps(obj, sort_keys=True, separators=(",", ":")) + "\n").encode())


def records_digest(records: list[dict[str, Any]]) -> str:
    return config_hash(records)


def job_digest(job: dict[str, Any], records: list[dict[str, Any]]) -> str:
    """The digest a job file carries: of its whole header (without the digest itself) and its records, so a
    header field edited afterwards (an eps, a model name, a flag) is refused like an edited record."""
    return config_hash({"job": {k: v for k, v in job.items() if k != "sha256"}, "records": records})


def write_job(out: Path, job_id: str, job: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """The job file, with a digest of all of it: anything edited by hand afterwards is refused on read."""
    write_json(job_file(out, job_id), {"job": {**job, "sha256": job_digest(job, records)}, "records": records})


def job_done(out: Path, job_id: str) -> bool:
    return job_file(out, job_id).is_file()


# --- schemas: what a report may rely on in a job file ----------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class JobInfo(_Strict):
    """A job file's header."""

    format: Literal[3]
    model: StrictStr
    attention: StrictStr
    pair: StrictStr
    evaluation: StrictStr  # a kind of questbench.kinds
    setting: StrictStr
    samples: StrictInt
    key_sha256: StrictStr
    suite_sha256: StrictStr
    flags: list[StrictStr]
    corruption: Optional[StrictStr] = None
    severity: Optional[StrictInt] = None
    attack: Optional[StrictStr] = None
    norm: Optional[StrictStr] = None
    eps: Optional[float] = None
    sweep: Optional[StrictInt] = None

    @field_validator("evaluation")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        if v not in KINDS:
            raise ValueError(f"unknown evaluation kind {v!r}")
        return v


@functools.cache
def _records_schema(kind: str) -> TypeAdapter:
    return TypeAdapter(list[KINDS[kind].record])


def _first_error(exc: ValidationError) -> str:
    e = exc.errors()[0]
    where = ".".join(str(p) for p in e["loc"]) or "(top level)"
    return f"{where}: {e['msg']}"


def read_job_file(f: Path, provenance: dict[str, Any]) -> dict[str, Any]:
    """A job file checked against its schema and against the folder's plan; one QuestbenchError otherwise."""
    try:
        doc = json.loads(f.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise QuestbenchError(f"damaged job file {f} (not JSON): delete it and re-run to redo that job") from None
    if not isinstance(doc, dict) or set(doc) != {"job", "records"}:
        raise QuestbenchError(f"job file {f} is not a questbench job (expected the keys job and records)")
    try:
        job = JobInfo.model_validate(doc["job"])
    except ValidationError as exc:
        raise QuestbenchError(f"job file {f} does not match the job schema ({_first_error(exc)})") from None
    try:
        _records_schema(job.evaluation).validate_python(doc["records"])
    except ValidationError as exc:
        raise QuestbenchError(f"job file {f} has a malformed record ({_first_error(exc)})") from None
    planned = provenance.get("jobs", {})
    if job.suite_sha256 != provenance.get("suite_sha256") or planned.get(f.stem) != job.key_sha256:
        raise QuestbenchError(f"job file {f} is foreign to this folder (another suite or configuration made it): "
                              "remove it, or keep each run in its own --out folder")
    if KINDS[job.evaluation].samples_of(job) is not None and len(doc["records"]) != job.samples:
        raise QuestbenchError(f"job file {f} holds {len(doc['records'])} records for {job.samples} samples: "
                              "delete it and re-run to redo that job")
    _check_records(f, job, doc["records"], provenance, doc["job"])
    return doc


def _check_records(f: Path, job: "JobInfo", records: list[dict[str, Any]], provenance: dict[str, Any],
                   header: dict[str, Any]) -> None:
    """What the records must hold beyond their schema: the planned sample ids exactly once each, outcomes that
    follow from the predictions, and the digest written with them (so an edit that keeps them consistent is
    refused too)."""
    redo = "delete it and re-run to redo that job"
    digest = (job.model_extra or {}).get("sha256")
    if not isinstance(digest, str):
        raise QuestbenchError(f"job file {f} has no digest (written by an older questbench, or edited): {redo}")
    if KINDS[job.evaluation].samples_of(job) is not None:
        _check_outcomes(f, job, records, provenance, redo)
    if digest != job_digest(header, records):
        raise QuestbenchError(f"job file {f}: it was changed after it was written (digest mismatch): {redo}")


def _check_outcomes(f: Path, job: "JobInfo", records: list[dict[str, Any]], provenance: dict[str, Any],
                    redo: str) -> None:
    ids = [r["sample_id"] for r in records]
    kind = KINDS[job.evaluation]
    planned = provenance.get("sample_ids", {}).get(kind.samples_of(job))
    if len(set(ids)) != len(ids):
        raise QuestbenchError(f"job file {f} holds a sample twice: {redo}")
    if planned is not None and ids != planned[:len(ids)] or planned is not None and len(ids) != len(planned):
        stray = next((i for i in ids if i not in set(planned)), None)
        raise QuestbenchError(f"job file {f} holds samples other than the planned ones"
                              + (f" ({stray!r} was never planned)" if stray else "") + f": {redo}")
    bad = next((r for r in records if not kind.outcome(r)), None) if kind.outcome is not None else None
    if bad is not None:
        raise QuestbenchError(f"job file {f}: sample {bad['sample_id']!r} records correct = {bad['correct']} "
                              f"against its prediction and label: {redo}")


REBUILD = "run the same suite into this folder again to rebuild it from the suite and the job files"


def write_provenance(out: Path, doc: dict[str, Any]) -> None:
    """The run's provenance, checked against its schema, with a digest of all of it: an edited seed, checksum or
    device is refused on read."""
    doc = typed_provenance(doc, "the run's provenance").model_dump(exclude_unset=True)
    write_json(Path(out) / PROVENANCE, {**doc, "sha256": _provenance_digest(doc)})


def typed_provenance(doc: dict[str, Any], what: str) -> Provenance:
    try:
        return Provenance.model_validate(doc)
    except ValidationError as exc:
        raise QuestbenchError(f"{what} does not match the provenance schema ({_first_error(exc)}): {REBUILD}") from None


def _provenance_digest(doc: dict[str, Any]) -> str:
    return config_hash({k: v for k, v in doc.items() if k != "sha256"})


def load_provenance(out: Path) -> tuple[Optional[dict[str, Any]], Optional[str]]:
    """(the folder's provenance document, None), or (None, why it cannot be trusted: missing, not JSON, edited).
    Read once. A folder whose job files are intact can be rebuilt: the next run of its suite writes it anew."""
    path = Path(out) / PROVENANCE
    if not path.is_file():
        return None, f"{out} has no {PROVENANCE}"
    try:
        prov = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None, f"damaged {path} (not JSON)"
    if not isinstance(prov, dict):
        return None, f"damaged {path} (not a provenance document)"
    if prov.get("format") == STORE_FORMAT and prov.get("sha256") != _provenance_digest(prov):
        return None, f"{path} was changed after it was written (digest mismatch)"
    return prov, None


def read_provenance(out: Path) -> dict[str, Any]:
    prov, problem = load_provenance(out)
    if problem is not None:
        if not (Path(out) / PROVENANCE).is_file() and not (Path(out) / JOBS_DIR).is_dir():
            raise QuestbenchError(f"{problem}: not a results folder of this questbench version")
        raise QuestbenchError(f"{problem}: {REBUILD}")
    if prov.get("format") != STORE_FORMAT:
        raise QuestbenchError(f"{Path(out) / PROVENANCE} is not a questbench provenance document of store format "
                              f"{STORE_FORMAT} (written by another version): re-run the suite into a new --out folder")
    return prov


@dataclass
class Results:
    """What ``load_results`` returns: the long per-sample table, one row per job, diagnostics, provenance."""

    samples: pd.DataFrame
    jobs: pd.DataFrame
    diagnostics: pd.DataFrame
    provenance: dict[str, Any]  # the document as written
    missing_jobs: list[str] = field(default_factory=list)  # planned jobs without a job file (a killed run)
    # ``run`` once validated (not an init field: a dataclasses.replace with another provenance validates anew)
    typed: Optional[Provenance] = field(default=None, init=False, repr=False)

    @property
    def run(self) -> Provenance:
        """The provenance, typed: what the report reads (validated on first use)."""
        if self.typed is None:
            self.typed = typed_provenance(self.provenance, "the provenance document")
        return self.typed


def load_results(path) -> Results:
    """A results folder's verified results; a list of folders: theirs as one (``store/combine.py``), each folder
    verified on its own and refused in one line if it was made with another configuration."""
    if isinstance(path, (list, tuple)):
        folders = [Path(p) for p in path]
        if not folders:
            raise QuestbenchError("no results folder given")
        if len(folders) == 1:
            return load_results(folders[0])
        from .combine import combine_results
        return combine_results(folders, [load_results(f) for f in folders])
    out = Path(path)
    jobs_dir = out / JOBS_DIR
    if not jobs_dir.is_dir():
        raise QuestbenchError(f"{out} holds no questbench results (no {JOBS_DIR}/ folder)")
    provenance = read_provenance(out)
    run = typed_provenance(provenance, str(out / PROVENANCE))
    sample_frames, job_rows, diag_rows = [], [], []
    for f in sorted(jobs_dir.glob("*.json")):
        doc = read_job_file(f, provenance)
        job = doc["job"]
        job_rows.append({k: v for k, v in job.items() if not isinstance(v, (dict, list))} |
                        {"flags": "; ".join(job.get("flags", [])), "job_id": f.stem,
                         "reused_from": (job.get("reused_from") or {}).get("folder")})
        if job["evaluation"] == "diagnostics":
            diag_rows.extend({"model": job["model"], "attention": job["attention"], "pair": job["pair"], **r}
                             for r in doc["records"])
            continue
        if not doc["records"]:
            continue
        df = pd.DataFrame(doc["records"])
        for col in ("model", "attention", "pair", "evaluation", "setting", "corruption", "severity", "attack",
                    "norm", "eps", "sweep"):
            df[col] = job.get(col)
        sample_frames.append(df)
    samples = pd.concat(sample_frames, ignore_index=True) if sample_frames else pd.DataFrame(columns=SAMPLE_COLUMNS)
    extra = [c for c in samples.columns if c not in SAMPLE_COLUMNS]
    samples = samples[SAMPLE_COLUMNS + extra]
    present = {f.stem for f in jobs_dir.glob("*.json")}
    missing = sorted(set(provenance.get("jobs", {})) - present)
    res = Results(samples=samples, jobs=pd.DataFrame(job_rows), diagnostics=pd.DataFrame(diag_rows),
                  provenance=provenance, missing_jobs=missing)
    res.typed = run
    return res
