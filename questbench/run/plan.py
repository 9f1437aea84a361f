"""Planning: a suite with its prepared datasets and model fingerprints -> jobs, each with the hash of everything
that determines its rows -> work units shared out between ranks. Pure functions of their inputs: the same
suite on the same data and checkpoints plans the same jobs, hashes and shares on every rank and every run.

A job's samples are cut into chunks of its batch size (a unit is one chunk of one job, or of one corruption
setting for every model at once). Every evaluator derives its randomness from the sample or from the chunk's
first index, and a chunk is batched the same way whichever process runs it, so a unit's records do not
depend on which rank computes it, nor on how many ranks there are.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from .._io import slug
from ..store.results import STORE_FORMAT, config_hash

KINDS = ("clean", "shift", "corruption", "attack", "check", "diagnostics")  # the order a rank runs its units in
ATTACK_KINDS = ("attack", "check")  # jobs an attack evaluator computes (a check is an attack run to check others)


@dataclass
class Job:
    model: str
    evaluation: str  # one of KINDS
    setting: str
    samples: int
    fields: dict[str, Any] = field(default_factory=dict)  # corruption/severity or attack config
    key: dict[str, Any] = field(default_factory=dict)  # everything that determines the job's rows
    chunk: int = 0  # samples per unit (0: the job is one unit)

    @property
    def key_sha256(self) -> str:
        return config_hash(self.key)

    @property
    def job_id(self) -> str:
        return f"{slug(f'{self.model}__{self.evaluation}__{self.setting}')}.{self.key_sha256[:16]}"

    def spans(self) -> list[tuple[int, int]]:
        """The job's units as [start, stop) sample ranges of its dataset."""
        if not self.chunk:
            return [(0, self.samples)]
        return [(a, min(a + self.chunk, self.samples)) for a in range(0, self.samples, self.chunk)]


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

    models = list(model_fp)
    jobs: list[Job] = []
    if s.clean:
        jobs += [Job(m, "clean", "clean", len(data.clean), key=key(m, "clean", data.clean), chunk=s.batch_size)
                 for m in models]
    if s.corruptions:
        c = s.corruptions
        source = {"mode": c.mode, "root": str(Path(c.root).resolve()) if c.root else None}
        if c.engine != "imagecorruptions":
            from ..evaluators.torch_corruptions import ENGINE_VERSION
            source |= {"engine": c.engine, "params": c.params, "engine_version": ENGINE_VERSION}
        for st in c.settings():
            for m in models:
                k = key(m, "corruption", data.corruption) | {"corruption": st.corruption, "severity": st.severity,
                                                             "source": source}
                jobs.append(Job(m, "corruption", st.key, len(data.corruption),
                                {"corruption": st.corruption, "severity": st.severity}, k, chunk=s.batch_size))
    for a_idx, spec in enumerate(s.sweeps):
        bs = spec.batch_size or s.batch_size
        kind = "check" if spec.check else "attack"
        for cfg in spec.configs:
            for m in models:
                k = key(m, kind, data.attacks[a_idx]) | {"attack": cfg.resolved(), "batch_size": bs}
                fields = {"attack": cfg.attack, "norm": cfg.norm, "eps": cfg.eps, "a_idx": a_idx, "config": cfg}
                setting = cfg.key if not spec.check else f"check:{spec.check}/{cfg.key}"
                if spec.check:
                    k["check"] = spec.check
                if spec.check == "transfer":
                    source = (partners or {}).get(m)
                    if source is None:
                        continue
                    k["source"] = {"model": source, "model_sha256": model_fp[source],
                                   "model_architecture": (model_arch or {}).get(source)}
                    fields["source"] = source
                    setting += f"/from={source}"
                jobs.append(Job(m, kind, setting, len(data.attacks[a_idx]), fields, k, chunk=bs))
    for name, sds in data.shifts.items():
        for m in models:
            k = key(m, "shift", sds) | {"shift": name, "protocol": "questbench.data.shifts/1"}
            jobs.append(Job(m, "shift", name, len(sds), {"dataset": name}, k, chunk=s.batch_size))
    if data.diagnostics is not None:  # per-layer statistics over all its samples: one unit
        jobs += [Job(m, "diagnostics", "attention", len(data.diagnostics), key=key(m, "diagnostics", data.diagnostics))
                 for m in models]
    return jobs


@dataclass(frozen=True)
class Unit:
    """One job's [start, stop) samples."""

    job_id: str
    kind: str
    start: int
    stop: int


def _cost(job: Job, n: int) -> float:
    """A rough relative cost, comparable within one kind of job only (shares are balanced kind by kind)."""
    if job.evaluation not in ATTACK_KINDS:
        return float(n)
    cfg = job.fields["config"]
    if cfg.eps == 0:
        return float(n)
    r = cfg.resolved()
    steps = r.get("steps") or 1
    return n * (r.get("restarts") or 1) * steps * (40 if cfg.attack == "autoattack" else 1)


def queue(jobs: Sequence[Job], kind: str) -> list[Unit]:
    """Every unit of one kind, costliest first (plan order among equal costs): the order ranks draw them in."""
    units = [(Unit(j.job_id, kind, a, b), _cost(j, b - a)) for j in jobs if j.evaluation == kind for a, b in j.spans()]
    return [u for u, _ in sorted(units, key=lambda t: -t[1])]


def share(jobs: Sequence[Job], world: int) -> list[list[Unit]]:
    """Units per rank: kind by kind, the costliest first to the least-loaded rank (ties: fewest units, then
    lowest rank). A corruption setting's units go together across models (one corrupted batch serves them all).
    Decided from the plan alone, never from which units are finished, so every rank computes the same shares
    and a resumed run gives each unit to the rank it had."""
    shares: list[list[Unit]] = [[] for _ in range(world)]
    for kind in KINDS:
        groups: dict[tuple, list[Unit]] = {}
        costs: dict[tuple, float] = {}
        for j in (j for j in jobs if j.evaluation == kind):
            for a, b in j.spans():
                g = ("corruption", j.setting, a) if kind == "corruption" else (j.job_id, a)
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
