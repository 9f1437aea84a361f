"""Runs a suite in four steps: *prepare* (questbench.run.prepare: datasets and models loaded and checked),
*plan* (questbench.run.plan: the suite -> jobs with identity hashes, shared out between ranks), *execute* this
rank's share (questbench.run.execute: one adapter per kind of job calls its evaluator), *merge*
(questbench.run.merge: parts -> the job files the reports read). Claims the output folder and shows progress;
knows nothing of how any evaluation works.

A run killed at any moment and started again into the same folder, with any number of ranks, ends with the
same table as an uninterrupted run: every record is a pure function of the suite (seeds derived per sample or
per chunk), and every job file and part file is written in one atomic rename.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from . import distributed
from ..config.suite import Suite
from ..errors import QuestbenchError
from ..progress import JobProgress, progress_bar
from ..store.results import job_done, write_provenance
from .execute import Context, derived_for, run_executor
from ..kinds import KINDS as KIND_OF
from ..kinds import Part
from .merge import SHARDS_DIR, merge_job, part_done, write_part
from .outdir import check_writable, claimed, set_aside_damaged
from ..kinds import Job
from .plan import KINDS, RankWork, Unit, rank_work
from .prepare import Prepared, prepare, resolve_device
from .provenance import job_header, provenance
from .reuse import check_sources, count_reusable, reuse_jobs


@dataclass
class RunSummary:
    out: Path
    jobs_total: int
    jobs_run: int
    jobs_skipped: int
    wall_s: float
    notes: list[str] = field(default_factory=list)  # the leaderboard reports flags, from the job files


class Runner:
    def __init__(self, suite: Suite, out, device: Optional[str] = None, limit: Optional[int] = None,
                 quiet: bool = False, registry_files=None, overwrite: bool = False, models=None,
                 ranks: Optional[distributed.Ranks] = None, reuse=()):
        self.suite = suite
        self.out = Path(out)
        self.ranks = ranks or distributed.from_env()
        if models is not None and self.ranks.world > 1:
            raise QuestbenchError("models given as Python objects run in one process, not under torchrun")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise QuestbenchError(f"--limit must be a positive integer, not {limit!r}")
        self.device = distributed.rank_device(resolve_device(device or suite.device), self.ranks)
        self.limit = limit
        self.quiet = quiet or not self.ranks.main  # one progress display: rank 0's
        self.registry_files = list(registry_files or []) + list(suite.registry)
        self.overwrite = overwrite
        self.reuse_from = list(reuse)  # folders whose jobs of identical configuration are copied, not computed
        self.reuse: dict[Path, dict] = {}  # those folders with their provenance, set by prepare()
        self.given_models = dict(models) if models is not None else None  # name -> nn.Module, from Python
        self.prepared: Optional[Prepared] = None  # set by prepare(): everything that can fail has been checked

    def prepare(self) -> Prepared:
        check_writable(self.out)
        self.reuse = check_sources(self.reuse_from, self.out)
        self.prepared = prepare(self.suite, self.device, self.limit, self.registry_files, self.given_models)
        return self.prepared

    def jobs(self) -> list[Job]:
        return self.prepared.jobs()

    def _claimed(self, p: Prepared, jobs: list[Job]):
        return claimed(self.out, p.run_config(), {j.job_id for j in jobs}, self.overwrite)

    def preflight(self) -> RunSummary:
        """Everything that can fail before a job runs, done in this process before ranks are launched (so that a
        user error is one line, printed once): prepare, plan, claim the folder. Returns the summary so far."""
        start = time.perf_counter()
        p = self.prepare()
        jobs = p.jobs()
        with self._claimed(p, jobs) as moved:
            pass
        pending = sum(not job_done(self.out, j.job_id) for j in jobs)
        reused = count_reusable(self.out, jobs, self.reuse)
        notes = [f"{reused} job(s) to be reused from {', '.join(map(str, self.reuse))}"] if reused else []
        return RunSummary(self.out, len(jobs), pending - reused, len(jobs) - pending + reused,
                          time.perf_counter() - start, p.notes + ([moved] if moved else []) + notes)

    def run(self) -> RunSummary:
        start = time.perf_counter()
        p = self.prepare()
        jobs = p.jobs()
        distributed.init(self.ranks, self.device)
        try:
            # rank 0 holds the folder for the run; the other ranks wait for it at the first barrier
            with self._claimed(p, jobs) if self.ranks.main else contextlib.nullcontext("") as moved:
                if moved:
                    p.notes.append(moved)
                if self.ranks.main:
                    doc = provenance(p, jobs, self.ranks.world)
                    write_provenance(self.out, doc)
                    p.notes.extend(set_aside_damaged(self.out, [j.job_id for j in jobs], doc))
                    p.notes.extend(reuse_jobs(self.out, p, jobs, self.reuse))
                # rank 0 counts before any rank writes; only its count is reported
                pending = [j for j in jobs if not job_done(self.out, j.job_id)]
                distributed.barrier(self.ranks)  # the folder is claimed before any rank writes into it
                self._execute(p, jobs)
                distributed.barrier(self.ranks)  # every rank's share is written: merge what was split
                if self.ranks.main:
                    self._merge(p, pending)
        finally:
            distributed.shutdown(self.ranks)
        return RunSummary(self.out, len(jobs), len(pending), len(jobs) - len(pending), time.perf_counter() - start,
                          p.notes)

    def _written(self, u: Unit) -> bool:
        return job_done(self.out, u.job_id) or part_done(self.out, u.job_id, u.start, u.stop)

    def _merge_job(self, p: Prepared, job: Job, held: dict[tuple[int, int], Part]) -> bool:
        return merge_job(self.out, job.job_id, job.spans(), held, lambda *a: job_header(p, job, *a))

    def _execute(self, p: Prepared, jobs: list[Job]) -> None:
        """Run this rank's share of the units not yet written: a job this rank computes whole is written as its
        job file, a part of one as a part file."""
        work = rank_work(jobs, self.ranks.rank, self.ranks.world, self._written)
        # corruption workers: the suite's number per host, divided between the ranks on it
        local = int(os.environ.get("LOCAL_WORLD_SIZE", self.ranks.world))
        ctx = Context(self.suite, p.models, p.data, self.device, self.suite.num_workers // max(1, local),
                      p.released_source)
        ctx.derived = derived_for(work.shared)
        by_id = {j.job_id: j for j in jobs}
        with progress_bar(self.quiet) as bar:
            progress = JobProgress(bar, {k: (KIND_OF[k].label, KIND_OF[k].unit, work.samples(k)) for k in KINDS})
            ctx.show = progress.show
            for kind in KINDS:
                def advance(n: int, kind: str = kind) -> None:
                    progress.advance(kind, n)
                if kind in work.drawn:
                    self._execute_drawn(p, ctx, by_id, work, kind, advance)
                else:
                    self._execute_shared(p, ctx, work, kind, advance)

    def _execute_shared(self, p: Prepared, ctx: Context, work: RankWork, kind: str, advance) -> None:
        """This rank's planned units of one kind. A job whose every unit is at hand (here, or as parts other
        ranks wrote) is written whole; else this rank's parts are written for the merge step."""
        mine = {job.job_id: spans for job, spans in work.shared[kind]}
        held: dict[str, dict[tuple[int, int], Part]] = {}
        for job, parts in run_executor(kind, ctx, work.shared[kind], advance):
            got = held.setdefault(job.job_id, {})
            got.update({(part.start, part.stop): part for part in parts})
            if self._merge_job(p, job, got):
                got.clear()
            elif all(span in got for span in mine[job.job_id]):  # this rank's share is done, others hold the rest
                for part in got.values():
                    write_part(self.out, job.job_id, part)
                got.clear()

    def _execute_drawn(self, p: Prepared, ctx: Context, by_id: dict[str, Job], work: RankWork, kind: str,
                       advance) -> None:
        """Units drawn one at a time from a counter the ranks share; each written as a part at once, then merged
        if its job is complete. A unit an earlier run finished is skipped when drawn. The progress bar counts
        the units other ranks drew as they are drawn."""
        units = work.drawn[kind]
        tickets = distributed.Tickets(self.ranks, kind)
        seen = 0
        while (i := tickets.draw()) < len(units):
            advance(work.counted(units[seen:i]))
            seen = i + 1
            u = units[i]
            if self._written(u):
                continue
            job = by_id[u.job_id]
            for _, parts in run_executor(kind, ctx, [(job, [(u.start, u.stop)])], advance):
                for part in parts:
                    write_part(self.out, job.job_id, part)
            self._merge_job(p, job, {})
        advance(work.counted(units[seen:]))

    def _merge(self, p: Prepared, pending: list[Job]) -> None:
        for job in pending:
            if not self._merge_job(p, job, {}):
                raise QuestbenchError(f"job {job.job_id} is missing parts after every rank finished; "
                                      "run the same command again to compute them")
        with contextlib.suppress(OSError):  # absent, or parts of another chunking are left in it
            (self.out / SHARDS_DIR).rmdir()


def run_suite(suite: Suite, out, **kwargs) -> RunSummary:
    """Run ``suite`` into the folder ``out`` (resuming a run of the same configuration there)."""
    return Runner(suite, out, **kwargs).run()
