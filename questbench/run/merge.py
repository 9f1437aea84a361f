"""Shards and merging: a rank that computed only part of a job's samples writes that part as its own file
(atomically, like a job file); once every part exists they are merged, in sample order, into the job file the
reports read, and the parts are removed.

    <out>/shards/<job id>.<start>-<stop>.json   {"part": {"wall_s", "flags", "config"}, "records": [rows]}

A part's name carries its job's identity hash and its sample range, so parts of another configuration or of
another chunking are never merged into a job; a run killed mid-way keeps its finished parts, and the next run
(with any number of ranks) computes only the missing ones.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import QuestbenchError
from ..kinds import Part
from ..store.results import job_done, records_digest, write_job, write_json

SHARDS_DIR = "shards"


def part_file(out: Path, job_id: str, start: int, stop: int) -> Path:
    return Path(out) / SHARDS_DIR / f"{job_id}.{start}-{stop}.json"


def write_part(out: Path, job_id: str, part: Part) -> None:
    write_json(part_file(out, job_id, part.start, part.stop),
               {"part": {"wall_s": part.wall_s, "flags": part.flags, "config": part.config,
                         "records_sha256": records_digest(part.records)},
                "records": part.records})


def read_part(out: Path, job_id: str, start: int, stop: int) -> Optional[Part]:
    f = part_file(out, job_id, start, stop)
    try:
        doc = json.loads(f.read_bytes())
    except FileNotFoundError:
        return None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise QuestbenchError(f"damaged shard part {f} (not JSON): delete it and run again to redo that part") \
            from None
    try:
        meta = doc["part"]
        part = Part(start, stop, doc["records"], meta["wall_s"], meta["flags"], meta["config"])
        digest = meta["records_sha256"]
    except (KeyError, TypeError):
        raise QuestbenchError(f"shard part {f} is not a questbench part: delete it and run again") from None
    if digest != records_digest(part.records):  # a part is merged into a job file and digested anew there
        raise QuestbenchError(f"shard part {f}: its records were changed after they were written (digest "
                              "mismatch): delete it and run again")
    if not isinstance(part.records, list) or len(part.records) != stop - start:
        raise QuestbenchError(f"shard part {f} holds {len(part.records) if isinstance(part.records, list) else 0} "
                              f"records for samples {start}-{stop}: delete it and run again")
    return part


def part_done(out: Path, job_id: str, start: int, stop: int) -> bool:
    return part_file(out, job_id, start, stop).is_file()


def merge_job(out: Path, job_id: str, spans: list[tuple[int, int]], held: dict[tuple[int, int], Part],
              job_doc: Callable[[float, list[str], Optional[dict]], dict[str, Any]]) -> bool:
    """Write the job file if every span's part is at hand (``held`` in memory, the rest as part files);
    returns whether the job is complete. ``job_doc(wall_s, flags, config)`` builds the job's header."""
    if job_done(out, job_id):
        return True
    parts = []
    for a, b in spans:
        p = held.get((a, b)) or read_part(out, job_id, a, b)
        if p is None:
            return False
        parts.append(p)
    flags = sorted({f for p in parts for f in p.flags})
    config = next((p.config for p in parts if p.config is not None), None)
    records = [r for p in parts for r in p.records]
    write_job(out, job_id, job_doc(sum(p.wall_s for p in parts), flags, config), records)
    for a, b in spans:
        part_file(out, job_id, a, b).unlink(missing_ok=True)
    return True
