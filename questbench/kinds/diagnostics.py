"""Attention diagnostics: per model and layer, attention entropy and query / key norms over the suite's
diagnostics images (one record per layer, computed over all of them as one unit)."""
from __future__ import annotations

import time
from typing import Iterator

from pydantic import StrictStr

from .base import Advance, Job, Kind, Part, Planning, StrictRecord, Work


class DiagnosticsRecord(StrictRecord):
    layer: StrictStr


def plan(p: Planning) -> list[Job]:
    ds = p.data.diagnostics
    if ds is None:
        return []
    return [Job(m, "diagnostics", "attention", len(ds), key=p.key(m, "diagnostics", ds)) for m in p.models]


def execute(ctx, work: Work, advance: Advance) -> Iterator[tuple[Job, list[Part]]]:
    from ..evaluators.common import autocast_for
    from ..evaluators.diagnostics import evaluate_diagnostics

    for job, spans in work:
        ctx.show("diagnostics", job.model)
        t0 = time.perf_counter()
        with autocast_for(ctx.suite.precision, ctx.device):
            records = evaluate_diagnostics(ctx.models[job.model], ctx.data.diagnostics, ctx.device, advance)
        yield job, [Part(0, job.samples, records, time.perf_counter() - t0)]


KIND = Kind(name="diagnostics", label="diagnostics", unit="images", record=DiagnosticsRecord, plan=plan,
            execute=execute, samples_of=lambda job: None)
