"""Clean accuracy: every model on the suite's test images, one record per image (prediction, correct or not)."""
from __future__ import annotations

from .base import Job, Kind, Planning, SampleRecord, per_sample, prediction_decides


def plan(p: Planning) -> list[Job]:
    if not p.suite.clean:
        return []
    ds = p.data.clean
    return [Job(m, "clean", "clean", len(ds), key=p.key(m, "clean", ds), chunk=p.suite.batch_size)
            for m in p.models]


def _evaluate(*args, **kwargs):
    from ..evaluators.clean import evaluate_clean
    return evaluate_clean(*args, **kwargs)


KIND = Kind(name="clean", label="clean", unit="images", record=SampleRecord, plan=plan,
            execute=per_sample("clean", lambda ctx, job: ctx.data.clean, _evaluate),
            samples_of=lambda job: "clean", outcome=prediction_decides)
