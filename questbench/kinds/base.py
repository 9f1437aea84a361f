"""What an evaluation kind is: the pieces plan, execute, the store and the report read from it, and the job and
record types they pass between them.

A kind module imports only the foundation at its top (so the torch-free layers can read the registry); the code
that runs a kind (datasets, models, evaluators) and the statistics of its tables are imported inside the
functions that use them.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, StrictStr

from .._io import config_hash, slug

Span = tuple[int, int]


@dataclass
class Job:
    model: str
    evaluation: str  # the kind's name
    setting: str
    samples: int
    fields: dict[str, Any] = field(default_factory=dict)  # written into the job header (corruption, eps, ...)
    key: dict[str, Any] = field(default_factory=dict)  # everything that determines the job's rows
    chunk: int = 0  # samples per unit (0: the job is one unit)

    @property
    def key_sha256(self) -> str:
        return config_hash(self.key)

    @property
    def job_id(self) -> str:
        return f"{slug(f'{self.model}__{self.evaluation}__{self.setting}')}.{self.key_sha256[:16]}"

    def spans(self) -> list[Span]:
        """The job's units as [start, stop) sample ranges of its dataset."""
        if not self.chunk:
            return [(0, self.samples)]
        return [(a, min(a + self.chunk, self.samples)) for a in range(0, self.samples, self.chunk)]


@dataclass
class Part:
    """Records of one job's [start, stop) samples and what computing them left behind."""

    start: int
    stop: int
    records: list[dict[str, Any]]
    wall_s: float = 0.0
    flags: list[str] = field(default_factory=list)
    config: Optional[dict[str, Any]] = None


Work = list[tuple[Job, list[Span]]]  # jobs of one kind, each with the spans of its samples this rank computes
Advance = Callable[[int], None]


@dataclass
class Planning:
    """What a kind plans its jobs from: the suite, its prepared datasets, the models, and ``key(model, kind,
    dataset)``, the identity every job shares (checkpoint, dataset content and ids, seed, precision, device,
    versions), which a kind extends with what its own rows depend on."""

    suite: Any
    data: Any  # run.plan.PreparedData
    models: list[str]
    key: Callable[[str, str, Any], dict[str, Any]]
    model_fp: dict[str, str]
    model_arch: dict[str, Optional[str]]
    partners: dict[str, str]


# --- records: what a job file's rows hold --------------------------------------------------------------------
class StrictRecord(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class SampleRecord(StrictRecord):
    sample_id: StrictStr
    label: StrictInt
    pred: StrictInt
    correct: StrictBool


def prediction_decides(record: dict[str, Any]) -> bool:
    """The outcome rule of a plain classification record: correct exactly when the prediction is the label."""
    return record["correct"] == (record["pred"] == record["label"])


@dataclass(frozen=True)
class Kind:
    """One evaluation kind. ``plan``: Planning -> its jobs. ``execute``: (run context, this rank's work, advance)
    -> (job, parts) as they finish. ``record``: the schema of its rows. ``samples_of``: a job header -> the name of
    the planned sample-id list its rows follow in provenance (None: rows are not per sample). ``outcome``: a row
    -> whether its outcome follows from its own fields (None: the kind has no such rule). ``aggregate``:
    results -> what the kind's report shows, computed once; ``tables``: the report's sections from it, for a kind
    that brings its own (the kinds the headline reads are tabulated by the report itself,
    ``report.sections.HEADLINE_KINDS``); ``csv``: its rows of the tidy csv from the same aggregate.
    ``section``: the suite table that turns it on, when it has its own (validated with the suite)."""

    name: str
    label: str  # the progress bar's name
    unit: str  # what one step of its progress bar counts
    record: type[BaseModel]
    plan: Callable[[Planning], list[Job]]
    execute: Callable[[Any, Work, Advance], Iterator[tuple[Job, list[Part]]]]
    samples_of: Callable[[Any], Optional[str]]
    outcome: Optional[Callable[[dict[str, Any]], bool]] = None
    drawn: bool = False  # its cost is unpredictable: under several ranks, units are drawn one at a time
    across_models: bool = False  # one batch of a setting serves every model: its units go to a rank together
    cost: Callable[[Job, int], float] = lambda job, n: float(n)  # relative cost of n samples, within the kind
    aggregate: Optional[Callable[[Any], Any]] = None  # results -> what its tables and csv rows show (None: nothing)
    tables: Optional[Callable[[Any], list[tuple[str, Any, list[str]]]]] = None  # the aggregate -> page sections
    csv: Optional[Callable[[Any], list[dict[str, Any]]]] = None  # the aggregate -> tidy csv rows
    section: Optional[type[BaseModel]] = None
    # rows computed from the logits of other kinds' jobs (same model, same setting name, same images): those
    # kinds' executors compute ``logit_fields`` on the way (Derived), and this kind runs the model only for the
    # rows they did not leave it
    from_logits_of: tuple[str, ...] = ()
    logit_fields: Optional[Callable[[Any, Any], list[dict[str, float]]]] = None

    def missing(self, tabulated_elsewhere=()) -> list[str]:
        """The pieces this kind lacks (``tabulated_elsewhere``: kinds whose tables the report makes itself)."""
        need = {"label": self.label, "unit": self.unit, "plan": self.plan, "execute": self.execute,
                "samples_of": self.samples_of}
        out = [piece for piece, v in need.items() if not v]
        if not (isinstance(self.record, type) and issubclass(self.record, BaseModel)):
            out.append("record")
        if self.tables is None and self.name not in tabulated_elsewhere:
            out.append("tables")
        if self.tables is not None and self.csv is None:
            out.append("csv")  # every number of a page is in the csv
        if self.tables is not None and self.aggregate is None:
            out.append("aggregate")
        if self.from_logits_of and self.logit_fields is None:
            out.append("logit_fields")
        return out


class Derived:
    """Rows one kind derives from the forward passes another kind's executor makes (calibration from the clean and
    corruption logits). The source asks :meth:`extra` for the fields to compute with its records, then hands its
    records to :meth:`keep`, which takes those fields back out (the source's rows stay as they are) and keeps them
    for the (model, setting) pairs the deriving kind will run on this rank; the deriving kind takes them (:meth:`take`)
    instead of running the model again. What is kept is small: per image one float64 row of the outcome and the
    derived numbers (56 bytes with calibration's four), beside the sample ids the records already hold."""

    def __init__(self, kind: Kind, wanted: set[tuple[str, str]]):
        self.kind, self.wanted = kind, wanted
        # the derived fields: those the deriving kind's record adds to a plain classification record
        self.names = [n for n in kind.record.model_fields if n not in SampleRecord.model_fields]
        self.kept: dict[tuple[str, str], list[tuple[list[str], Any]]] = {}  # (model, setting) -> (ids, rows)

    def extra(self, source: str) -> Optional[Callable]:
        return self.kind.logit_fields if source in self.kind.from_logits_of else None

    def keep(self, source: str, model: str, setting: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.extra(source) is None:
            return records
        if (model, setting) in self.wanted and records:
            import numpy as np  # float64 holds the labels, predictions and flags exactly, and the numbers as computed

            rows = np.array([[r["label"], r["pred"], r["correct"], *(r[k] for k in self.names)] for r in records],
                            dtype=np.float64)
            self.kept.setdefault((model, setting), []).append(([r["sample_id"] for r in records], rows))
        return [{k: v for k, v in r.items() if k not in self.names} for r in records]

    def take(self, model: str, setting: str, sample_ids: list[str]) -> Optional[list[dict[str, Any]]]:
        """The rows of these images in the deriving kind's record form, or None unless every one was kept."""
        chunks = self.kept.get((model, setting), [])
        where = {i: (c, j) for c, (ids, _) in enumerate(chunks) for j, i in enumerate(ids)}
        if not sample_ids or not all(i in where for i in sample_ids):
            return None
        out = []
        for i in sample_ids:
            c, j = where[i]
            label, pred, correct, *values = chunks[c][1][j].tolist()
            out.append({"sample_id": i, "label": int(label), "pred": int(pred), "correct": bool(correct),
                        **dict(zip(self.names, values))})
        if len(where) == len(set(sample_ids)):  # all taken: let it go
            del self.kept[(model, setting)]
        return out


def split(spans: list[Span], records: list[dict], wall: float, flags=(), config=None) -> list[Part]:
    """One Part per span from records in span order (each span's wall time in proportion to its samples)."""
    parts, i, total = [], 0, sum(b - a for a, b in spans) or 1
    for a, b in spans:
        parts.append(Part(a, b, records[i:i + b - a], wall * (b - a) / total, list(flags), config))
        i += b - a
    return parts


@contextmanager
def naming(job: Job) -> Iterator[None]:
    """Non-finite logits name the model and the setting that met them."""
    from ..evaluators.common import NonFiniteLogits

    try:
        yield
    except NonFiniteLogits as exc:
        raise exc.named(f"model {job.model} ({job.setting})") from None


def per_sample(kind: str, dataset: Callable[[Any, Job], Any], evaluate: Callable[..., list[dict]]):
    """Executor for evaluations that are one model on one dataset, sample by sample: ``evaluate(model, ds,
    batch_size, device, advance, spans, num_workers[, extra=])`` -> records (``extra`` only when another kind
    derives rows from these logits)."""
    def execute(ctx, work: Work, advance: Advance) -> Iterator[tuple[Job, list[Part]]]:
        from ..evaluators.common import run_with_batch_fallback

        for job, spans in work:
            ctx.show(kind, job.model if job.setting == kind else f"{job.model} {job.setting}")
            ds = dataset(ctx, job)
            t0 = time.perf_counter()
            extra = ctx.extra(kind)
            more = {} if extra is None else {"extra": extra}  # fields other kinds derive from these logits
            with naming(job):
                records = run_with_batch_fallback(
                    lambda bs: evaluate(ctx.model(job.model), ds, bs, ctx.device, advance, spans, ctx.num_workers,
                                        **more), ctx.suite.batch_size)
            records = ctx.keep(kind, job.model, job.setting, records)
            yield job, split(spans, records, time.perf_counter() - t0)
    return execute
