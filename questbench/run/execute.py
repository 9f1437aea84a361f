"""Executing a rank's share: one small adapter per kind of job between the plan (jobs, sample spans) and an
evaluator (model + dataset -> per-sample records). The runner calls ``EXECUTORS[kind]`` and stores what comes
back; it knows nothing of how any evaluation works.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

from ..evaluators.common import NonFiniteLogits, autocast_for, run_with_batch_fallback, scoped, with_precision
from .merge import Part
from .plan import Job, PreparedData
from ..config.settings import PatchConfig

Span = tuple[int, int]
Work = list[tuple[Job, list[Span]]]  # jobs of one kind, each with the spans of its samples this rank computes


@dataclass
class Context:
    suite: Any
    models: dict[str, Any]
    data: PreparedData
    device: str
    num_workers: int = 0  # data-loading workers of this rank
    released_source: Optional[Callable[[Any], Any]] = None  # corruption dataset -> grid source (released sets)
    show: Callable[[str, str], None] = lambda kind, now: None

    def model(self, name: str):
        """The model as the suite's precision runs it (attacks wrap it themselves, with their gradients)."""
        return with_precision(self.models[name], self.suite.precision, self.device)


def split(spans: list[Span], records: list[dict], wall: float, flags=(), config=None) -> list[Part]:
    """One Part per span from records in span order (each span's wall time in proportion to its samples)."""
    parts, i, total = [], 0, sum(b - a for a, b in spans) or 1
    for a, b in spans:
        parts.append(Part(a, b, records[i:i + b - a], wall * (b - a) / total, list(flags), config))
        i += b - a
    return parts


@contextmanager
def _naming(job: Job) -> Iterator[None]:
    """Non-finite logits name the model and the setting that met them."""
    try:
        yield
    except NonFiniteLogits as exc:
        raise exc.named(f"model {job.model} ({job.setting})") from None


def _per_sample(kind: str, evaluate: Callable[..., list[dict]]):
    """Executor for evaluations that are one model on one dataset, sample by sample (clean, shift)."""
    def execute(ctx: Context, work: Work, advance) -> Iterator[tuple[Job, list[Part]]]:
        for job, spans in work:
            ctx.show(kind, job.model if kind == "clean" else f"{job.model} {job.setting}")
            ds = ctx.data.clean if kind == "clean" else ctx.data.shifts[job.setting]
            t0 = time.perf_counter()
            with _naming(job):
                records = run_with_batch_fallback(
                    lambda bs: evaluate(ctx.model(job.model), ds, bs, ctx.device, advance, spans, ctx.num_workers),
                    ctx.suite.batch_size)
            yield job, split(spans, records, time.perf_counter() - t0)
    return execute


def _clean(*args):
    from ..evaluators.clean import evaluate_clean
    return evaluate_clean(*args)


def _shift(*args):
    from ..evaluators.shift import evaluate_shift
    return evaluate_shift(*args)


def execute_corruptions(ctx: Context, work: Work, advance) -> Iterator[tuple[Job, list[Part]]]:
    """Settings whose samples this rank holds as one contiguous range run as one grid over that range (in one
    process: every setting over all samples), so each corrupted batch is made once for every model."""
    from ..evaluators.corruptions import evaluate_corruptions, evaluate_released

    if not work:
        return
    c = ctx.suite.corruptions
    groups: dict[Span, dict[str, dict[str, Job]]] = {}  # sample range -> setting -> model -> job
    for job, spans in work:
        ranges = _contiguous(spans)
        for r in ranges:
            groups.setdefault(r, {}).setdefault(job.setting, {})[job.model] = job
    by_key = {st.key: st for st in c.settings()}
    for (a, b), by_setting in groups.items():
        ds = ctx.data.corruption.subset(list(range(a, b)))  # sample ids keep each image's seed
        settings = [by_key[k] for k in by_key if k in by_setting]
        names = [m for m in ctx.models if any(m in jobs for jobs in by_setting.values())]
        models = {m: ctx.model(m) for m in names}
        kwargs = dict(batch_size=ctx.suite.batch_size, num_workers=ctx.num_workers, device=ctx.device,
                      on_batch=lambda n: advance(n * len(models)))
        if ctx.released_source is None:
            it = evaluate_corruptions(models, ds, settings, suite_seed=ctx.suite.seed, mode=c.mode, engine=c.engine,
                                      params=c.params, **kwargs)
        else:
            it = evaluate_released(models, ctx.released_source(ds), ds.labels, ds.sample_ids, settings, **kwargs)
        last, last_setting, wall = time.perf_counter(), None, 0.0
        for setting, model_name, records in it:
            if setting != last_setting:  # a setting's models arrive together; share its time between them
                ctx.show("corruption", f"{setting.corruption} severity {setting.severity} done")
                now = time.perf_counter()
                wall, last, last_setting = (now - last) / len(models), now, setting
            job = by_setting[setting.key].get(model_name)
            if job is not None:
                yield job, split(_chunks(job, a, b), records, wall)


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


def execute_attacks(ctx: Context, work: Work, advance) -> Iterator[tuple[Job, list[Part]]]:
    from ..evaluators.attacks import evaluate_attack
    from ..evaluators.patch import evaluate_patch
    from ..config.labels import attack_label, budget_label

    for job, spans in work:
        cfg = job.fields["config"]
        spec = ctx.suite.sweeps[job.fields["a_idx"]]
        ds = ctx.data.attacks[job.fields["a_idx"]]
        ctx.show("attack", f"{job.model} {attack_label(job.setting)} {budget_label(job.fields['attack'], cfg.eps)}")
        evaluate = evaluate_patch if isinstance(cfg, PatchConfig) else evaluate_attack
        source = {"source": ctx.models[job.fields["source"]]} if "source" in job.fields else {}
        t0 = time.perf_counter()
        with _naming(job):
            result = run_with_batch_fallback(
                lambda bs: evaluate(ctx.models[job.model], ds, cfg, seed=ctx.suite.seed, batch_size=bs,
                                    device=ctx.device, precision=ctx.suite.precision, on_batch=advance, spans=spans,
                                    **source),
                spec.batch_size or ctx.suite.batch_size)
        yield job, split(spans, result.records, time.perf_counter() - t0, result.flags, result.config)


def execute_diagnostics(ctx: Context, work: Work, advance) -> Iterator[tuple[Job, list[Part]]]:
    from ..evaluators.diagnostics import evaluate_diagnostics

    for job, spans in work:
        ctx.show("diagnostics", job.model)
        t0 = time.perf_counter()
        with autocast_for(ctx.suite.precision, ctx.device):
            records = evaluate_diagnostics(ctx.models[job.model], ctx.data.diagnostics, ctx.device, advance)
        yield job, [Part(0, job.samples, records, time.perf_counter() - t0)]


def run_executor(kind: str, ctx: Context, work: Work, advance) -> Iterator[tuple[Job, list[Part]]]:
    """``EXECUTORS[kind]`` with each job's computation inside its precision scope (TF32 on a GPU, restored)."""
    return scoped(EXECUTORS[kind](ctx, work, advance), ctx.device)


EXECUTORS: dict[str, Callable[[Context, Work, Callable[[int], None]], Iterator[tuple[Job, list[Part]]]]] = {
    "clean": _per_sample("clean", _clean), "shift": _per_sample("shift", _shift),
    "corruption": execute_corruptions, "attack": execute_attacks, "check": execute_attacks,
    "diagnostics": execute_diagnostics}
