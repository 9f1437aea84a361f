"""Distribution shift: clean accuracy on each shift test set of the suite under its published protocol (logits
masked to its classes, or a label set per image), one record per image."""
from __future__ import annotations

from .base import Job, Kind, Planning, SampleRecord, per_sample


def plan(p: Planning) -> list[Job]:
    jobs = []
    for name, ds in p.data.shifts.items():
        for m in p.models:
            k = p.key(m, "shift", ds) | {"shift": name, "protocol": "questbench.data.shifts/1"}
            jobs.append(Job(m, "shift", name, len(ds), {"dataset": name}, k, chunk=p.suite.batch_size))
    return jobs


def _evaluate(*args):
    from ..evaluators.shift import evaluate_shift
    return evaluate_shift(*args)


# correctness follows the shift's label sets and class masks (not the prediction alone): the digest covers it
KIND = Kind(name="shift", label="shifts", unit="images", record=SampleRecord, plan=plan,
            execute=per_sample("shift", lambda ctx, job: ctx.data.shifts[job.setting], _evaluate),
            samples_of=lambda job: f"shift[{job.setting}]")
