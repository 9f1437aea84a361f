"""Common corruptions: every model on every (corruption, severity) setting of the suite's grid, made on the fly
or read from a released set, one record per image and setting. A corrupted batch is made once for every model."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from .base import Advance, Job, Kind, Part, Planning, SampleRecord, Span, Work, prediction_decides, split


def corruption_identity(c) -> dict[str, Any]:
    """What made the corrupted images, for the identity of every job that reads them: the mode, the released
    set's folder, or the torch engine with its constants and version."""
    source = {"mode": c.mode, "root": str(Path(c.root).resolve()) if c.root else None}
    if c.engine != "imagecorruptions":
        from ..evaluators.torch_corruptions import ENGINE_VERSION
        source |= {"engine": c.engine, "params": c.params, "engine_version": ENGINE_VERSION}
    return source


def plan(p: Planning) -> list[Job]:
    c = p.suite.corruptions
    if not c:
        return []
    ds, source, jobs = p.data.corruption, corruption_identity(c), []
    for st in c.settings():
        for m in p.models:
            k = p.key(m, "corruption", ds) | {"corruption": st.corruption, "severity": st.severity, "source": source}
            jobs.append(Job(m, "corruption", st.key, len(ds), {"corruption": st.corruption, "severity": st.severity},
                            k, chunk=p.suite.batch_size))
    return jobs


def grid_executor(kind: str, extra: Optional[Callable] = None):
    """Executor of jobs whose setting is a corruption setting (job.fields: corruption, severity). Settings whose
    samples this rank holds as one contiguous range run as one grid over that range (in one process: every
    setting over all samples), so each corrupted batch is made once for every model. ``extra``: fields each
    record gains from the model's logits (evaluators.common.records_from)."""
    def execute(ctx, work: Work, advance: Advance) -> Iterator[tuple[Job, list[Part]]]:
        from ..config.settings import CorruptionSetting
        from ..evaluators.corruptions import evaluate_corruptions, evaluate_released

        if not work:
            return
        c = ctx.suite.corruptions
        groups: dict[Span, dict[str, dict[str, Job]]] = {}  # sample range -> setting -> model -> job
        settings: dict[str, Any] = {}
        for job, spans in work:
            st = CorruptionSetting(job.fields["corruption"], job.fields["severity"])
            settings[st.key] = st
            for r in _contiguous(spans):
                groups.setdefault(r, {}).setdefault(st.key, {})[job.model] = job
        order = [st.key for st in c.settings()]  # the suite's order: the same grid on every rank
        for (a, b), by_setting in groups.items():
            ds = ctx.data.corruption.subset(list(range(a, b)))  # sample ids keep each image's seed
            here = [settings[k] for k in order if k in by_setting]
            names = [m for m in ctx.models if any(m in jobs for jobs in by_setting.values())]
            models = {m: ctx.model(m) for m in names}
            kwargs = dict(batch_size=ctx.suite.batch_size, num_workers=ctx.num_workers, device=ctx.device,
                          on_batch=lambda n: advance(n * len(models)), extra=extra or ctx.extra(kind))
            if ctx.released_source is None:
                it = evaluate_corruptions(models, ds, here, suite_seed=ctx.suite.seed, mode=c.mode,
                                          engine=c.engine, params=c.params, **kwargs)
            else:
                it = evaluate_released(models, ctx.released_source(ds), ds.labels, ds.sample_ids, here, **kwargs)
            last, last_setting, wall = time.perf_counter(), None, 0.0
            for setting, model_name, records in it:
                if setting != last_setting:  # a setting's models arrive together; share its time between them
                    ctx.show(kind, f"{setting.corruption} severity {setting.severity} done")
                    now = time.perf_counter()
                    wall, last, last_setting = (now - last) / len(models), now, setting
                if extra is None:  # what other kinds derive from these logits is kept for them
                    records = ctx.keep(kind, model_name, setting.key, records)
                job = by_setting[setting.key].get(model_name)
                if job is not None:
                    yield job, split(_chunks(job, a, b), records, wall)
    return execute


def _contiguous(spans: list[Span]) -> list[Span]:
    out: list[Span] = []
    for a, b in sorted(spans):
        if out and out[-1][1] == a:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def _chunks(job: Job, a: int, b: int) -> list[Span]:
    return [s for s in job.spans() if a <= s[0] and s[1] <= b]


KIND = Kind(name="corruption", label="corruptions", unit="images x settings", record=SampleRecord, plan=plan,
            execute=grid_executor("corruption"), samples_of=lambda job: "corruption", outcome=prediction_decides,
            across_models=True)
