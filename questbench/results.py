"""The results store: one JSON file per finished job (written atomically) and one provenance document per run.

Layout of an output folder::

    <out>/jobs/<job id>.json     {"job": {...config, wall time, flags...}, "records": [per-sample rows]}
    <out>/provenance.json        suite, suite sha256, versions, checkpoints, device, dtype, seeds, sample ids

A job is done when its file exists, so a killed run resumes where it stopped. Every aggregate (accuracy,
CE, mCE, curves, leaderboards, paired tests) is computed from the per-sample rows, never stored.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import QuestbenchError
from .models import atomic_write_bytes

JOBS_DIR = "jobs"
PROVENANCE = "provenance.json"
SAMPLE_COLUMNS = ["model", "attention", "pair", "evaluation", "setting", "corruption", "severity", "attack",
                  "norm", "eps", "sample_id", "label", "pred", "correct"]


def job_file(out: Path, job_id: str) -> Path:
    return Path(out) / JOBS_DIR / f"{job_id}.json"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text).strip("_")


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(Path(path), (json.dumps(obj, sort_keys=True, separators=(",", ":")) + "\n").encode())


def write_job(out: Path, job_id: str, job: dict[str, Any], records: list[dict[str, Any]]) -> None:
    write_json(job_file(out, job_id), {"job": job, "records": records})


def job_done(out: Path, job_id: str) -> bool:
    return job_file(out, job_id).is_file()


@dataclass
class Results:
    """What ``load_results`` returns: the long per-sample table, one row per job, diagnostics, provenance."""

    samples: pd.DataFrame
    jobs: pd.DataFrame
    diagnostics: pd.DataFrame
    provenance: dict[str, Any]


def load_results(path) -> Results:
    out = Path(path)
    jobs_dir = out / JOBS_DIR
    if not jobs_dir.is_dir():
        raise QuestbenchError(f"{out} holds no questbench results (no {JOBS_DIR}/ folder)")
    sample_frames, job_rows, diag_rows = [], [], []
    for f in sorted(jobs_dir.glob("*.json")):
        try:
            doc = json.loads(f.read_text())
        except json.JSONDecodeError:
            raise QuestbenchError(f"corrupt job file {f}: delete it and re-run to redo that job") from None
        job = doc["job"]
        job_rows.append({k: v for k, v in job.items() if not isinstance(v, (dict, list))} |
                        {"flags": "; ".join(job.get("flags", [])), "job_id": f.stem})
        if job["evaluation"] == "diagnostics":
            diag_rows.extend({"model": job["model"], "attention": job["attention"], "pair": job["pair"], **r}
                             for r in doc["records"])
            continue
        if not doc["records"]:
            continue
        df = pd.DataFrame(doc["records"])
        for col in ("model", "attention", "pair", "evaluation", "setting", "corruption", "severity", "attack",
                    "norm", "eps"):
            df[col] = job.get(col)
        sample_frames.append(df)
    samples = pd.concat(sample_frames, ignore_index=True) if sample_frames else pd.DataFrame(columns=SAMPLE_COLUMNS)
    extra = [c for c in samples.columns if c not in SAMPLE_COLUMNS]
    samples = samples[SAMPLE_COLUMNS + extra]
    prov_path = out / PROVENANCE
    provenance = json.loads(prov_path.read_text()) if prov_path.is_file() else {}
    return Results(samples=samples, jobs=pd.DataFrame(job_rows), diagnostics=pd.DataFrame(diag_rows),
                   provenance=provenance)
