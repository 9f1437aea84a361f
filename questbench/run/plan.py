"""Planning: a suite with its prepared datasets and model fingerprints -> jobs, each with the hash of everything
that determines its rows -> work units shared out between ranks. Pure functions of their inputs: the same
suite on the same data and checkpoints plans the same jobs, hashes and shares on every rank and every run.

A job's samples are cut into chunks of its batch size (a unit is one chunk of one job, or of one corruption
setting for every model at once). Every evaluator derives its randomness from the sample or from the chunk's
first index, and a chunk is batched the same way whichever process runs it, so a unit's records do not
depend on which rank computes it, nor on how many ranks there are.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from ..kinds import KINDS as REGISTRY
from ..kinds import Job, Planning
from ..store.results import STORE_FORMAT
from .._io import config_hash

KINDS = tuple(REGISTRY)  # the order a rank runs its units in
ATTACK_KINDS = tuple(k.name for k in REGISTRY.values() if k.drawn)  # drawn one unit at a time under several ranks


@dataclass
class PreparedData:
    """The datasets a suite evaluates on (already capped and ordered) and their content fingerprints."""

    clean: Any
    corruption: Any
    attacks: list[Any]
    diagnostics: Any
    shifts: dict[str, Any]
    fingerprints: dict[int, str]  # id(dataset) -> content hash


def plan_jobs(suite, data: PreparedData, model_fp: dict[str, str], device_kind: str,
              versions: dict[str, str], partners: Optional[dict[str, str]] = None,
              model_arch: Optional[dict[str, str]] = None) -> list[Job]:
    """Every job of ``suite`` (models in suite order; corruptions setting-major so that one corrupted batch
    serves every model). ``partners``: model -> the model of its trained pair a transfer check attacks from
    (models without one get no transfer check). ``model_arch``: model -> hash of its architecture and preprocessing
    (run.prepare.model_architecture); with the weights and the name it identifies the model a job ran."""
    s = suite

    def key(model: str, evaluation: str, ds) -> dict[str, Any]:
        return {"format": STORE_FORMAT, "model": model, "model_sha256": model_fp[model],
                "model_architecture": (model_arch or {}).get(model), "evaluation": evaluation,
                "dataset": {"name": ds.name, "split": s.data.split, "content": data.fingerprints[id(ds)],
                            "sample_ids": config_hash(list(ds.sample_ids))},
                "seed": s.seed, "precision": s.precision, "batch_size": s.batch_size,
                "device": device_kind, "versions": versions}

    planning = Planning(s, data, list(model_fp), key, model_fp, dict(model_arch or {}), dict(partners or {}))
    return [job for k in REGISTRY.values() for job in k.plan(planning)]


@dataclass(frozen=True)
class Unit:
    """One job's [start, stop) samples."""

    job_id: str
    kind: str
    start: int
    stop: int


def _cost(job: Job, n: int) -> float:
    """A rough relative cost, comparable within one kind of job only (shares are balanced kind by kind)."""
    return REGISTRY[job.evaluation].cost(job, n)


def queue(jobs: Sequence[Job], kind: str) -> list[Unit]:
    """Every unit of one kind, costliest first (plan order among equal costs): the order ranks draw them in."""
    units = [(Unit(j.job_id, kind, a, b), _cost(j, b - a)) for j in jobs if j.evaluation == kind for a, b in j.spans()]
    return [u for u, _ in sorted(units, key=lambda t: -t[1])]


def share(jobs: Sequence[Job], world: int) -> list[list[Unit]]:
    """Units per rank: kind by kind, the costliest first to the least-loaded rank (ties: fewest units, then
    lowest rank). A kind that serves every model from one batch (a corruption setting: the corrupted batch is made
    once) has its units of one setting and span go together across models.
    Decided from the plan alone, never from which units are finished, so every rank computes the same shares
    and a resumed run gives each unit to the rank it had."""
    shares: list[list[Unit]] = [[] for _ in range(world)]
    for kind in KINDS:
        groups: dict[tuple, list[Unit]] = {}
        costs: dict[tuple, float] = {}
        for j in (j for j in jobs if j.evaluation == kind):
            for a, b in j.spans():
                g = (j.setting, a) if REGISTRY[kind].across_models else (j.job_id, a)
                groups.setdefault(g, []).append(Unit(j.job_id, kind, a, b))
                costs[g] = max(costs.get(g, 0.0), _cost(j, b - a))
        load, count = [0.0] * world, [0] * world
        order = sorted(groups, key=lambda g: -costs[g])  # stable: plan order among equal costs
        for g in order:
            r = min(range(world), key=lambda i: (load[i], count[i], i))
            load[r] += costs[g]
            count[r] += 1
            shares[r].extend(u for u in groups[g])
    return shares


@dataclass
class RankWork:
    """What one rank computes of a plan, given the units already written. Kinds in ``drawn`` are taken one
    unit at a time from a queue every rank holds (attacks under several ranks: their cost is unpredictable);
    every other kind is this rank's planned share, per kind as (job, its spans here) pairs."""

    shared: dict[str, list[tuple[Job, list[tuple[int, int]]]]]
    drawn: dict[str, list[Unit]]
    open_units: set[Unit]  # units of the drawn queues not yet written: what the progress bar counts of them

    def samples(self, kind: str) -> int:
        """How many samples of ``kind`` this rank's progress bar counts."""
        if kind in self.drawn:
            return sum(u.stop - u.start for u in self.drawn[kind] if u in self.open_units)
        return sum(b - a for _, spans in self.shared[kind] for a, b in spans)

    def counted(self, units: Sequence[Unit]) -> int:
        return sum(u.stop - u.start for u in units if u in self.open_units)


def rank_work(jobs: Sequence[Job], rank: int, world: int, written: Callable[[Unit], bool]) -> RankWork:
    """This rank's work: its share of every shared kind minus what is ``written``, and the drawn queues."""
    drawn_kinds = ATTACK_KINDS if world > 1 else ()
    by_id = {j.job_id: j for j in jobs}
    spans: dict[str, list[tuple[int, int]]] = {}
    for u in share(jobs, world)[rank]:
        if u.kind not in drawn_kinds and not written(u):
            spans.setdefault(u.job_id, []).append((u.start, u.stop))
    shared = {k: [(by_id[i], s) for i, s in spans.items() if by_id[i].evaluation == k] for k in KINDS}
    drawn = {k: queue(jobs, k) for k in drawn_kinds}  # the same list on every rank whenever it looks
    return RankWork(shared, drawn, {u for units in drawn.values() for u in units if not written(u)})
