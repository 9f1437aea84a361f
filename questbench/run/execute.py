"""Executing a rank's share: the run's context (suite, loaded models, prepared data, device) handed to each
kind's executor (questbench.kinds), with each job's computation inside its precision scope. The runner stores
what comes back; it knows nothing of how any evaluation works.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

from ..evaluators.common import scoped, with_precision
from ..kinds import KINDS, Job, Part, Work
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

    def model(self, name: str):
        """The model as the suite's precision runs it (attacks wrap it themselves, with their gradients)."""
        return with_precision(self.models[name], self.suite.precision, self.device)


def run_executor(kind: str, ctx: Context, work: Work, advance) -> Iterator[tuple[Job, list[Part]]]:
    """The kind's executor with each job's computation inside its precision scope (TF32 on a GPU, restored)."""
    return scoped(KINDS[kind].execute(ctx, work, advance), ctx.device)
