"""Executing a rank's share: the run's context (suite, loaded models, prepared data, device) handed to each
kind's executor (questbench.kinds), with each job's computation inside its precision scope. The runner stores
what comes back; it knows nothing of how any evaluation works.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

from ..evaluators.common import scoped, with_precision
from ..kinds import KINDS, Job, Part, Work
from ..kinds.base import Derived
from .plan import PreparedData


@dataclass
class Context:
    suite: Any
    models: dict[str, Any]
    data: PreparedData
    device: str
    num_workers: int = 0  # data-loading workers of this rank
    released_source: Optional[Callable[[Any], Any]] = None  # corruption dataset -> grid source (released sets)
    show: Callable[[str, str], None] = lambda kind, now: None
    derived: list[Derived] = field(default_factory=list)  # rows other kinds take from this rank's forward passes

    def extra(self, source: str) -> Optional[Callable]:
        """Per-image fields the executor of kind ``source`` computes from its logits for the kinds deriving rows
        from it (None: none do)."""
        fns = [f for d in self.derived if (f := d.extra(source)) is not None]
        if len(fns) <= 1:
            return fns[0] if fns else None
        return lambda logits, labels: [{k: v for part in parts for k, v in part.items()}
                                       for parts in zip(*(f(logits, labels) for f in fns))]

    def keep(self, source: str, model: str, setting: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``records`` of a ``source`` job as its kind stores them, the derived fields kept for their kinds."""
        for d in self.derived:
            records = d.keep(source, model, setting, records)
        return records

    def take(self, kind: str, model: str, setting: str, sample_ids: list[str]) -> Optional[list[dict[str, Any]]]:
        """Rows of ``kind`` another kind's forward passes left for these images (None: run the model for them)."""
        return next((d.take(model, setting, sample_ids) for d in self.derived if d.kind.name == kind), None)

    def model(self, name: str):
        """The model as the suite's precision runs it (attacks wrap it themselves, with their gradients)."""
        return with_precision(self.models[name], self.suite.precision, self.device)


def run_executor(kind: str, ctx: Context, work: Work, advance) -> Iterator[tuple[Job, list[Part]]]:
    """The kind's executor with each job's computation inside its precision scope (TF32 on a GPU, restored)."""
    return scoped(KINDS[kind].execute(ctx, work, advance), ctx.device)


def derived_for(work: dict[str, Work]) -> list[Derived]:
    """A Derived store for each kind that takes rows from other kinds' forward passes and has work here."""
    return [Derived(KINDS[k], {(job.model, job.setting) for job, _ in w}) for k, w in work.items()
            if KINDS[k].from_logits_of and w]
