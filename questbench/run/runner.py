"""Runs a suite in three steps: *plan* (questbench.run.plan: the suite -> jobs with identity hashes, shared out
between ranks), *execute* this rank's share (questbench.run.execute: one adapter per kind of job calls its
evaluator), *merge* (questbench.run.merge: parts -> the job files the reports read). Prepares datasets and
models, claims the output folder, shows progress; knows nothing of how any evaluation works.

A run killed at any moment and started again into the same folder, with any number of ranks, ends with the
same table as an uninterrupted run: every record is a pure function of the suite (seeds derived per sample or
per chunk), and every job file and part file is written in one atomic rename.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from . import distributed
from ..data import load_dataset
from ..errors import QuestbenchError
from ..config.settings import PatchConfig
from .execute import Context, run_executor
from .merge import SHARDS_DIR, Part, merge_job, part_done, write_part
from .outdir import check_writable, claim, exclusive
from .plan import KINDS, Job, PreparedData, plan_jobs, queue, share
from ..progress import JobProgress, progress_bar
from ..models.registry import load_model
from ..store.results import PROVENANCE, STORE_FORMAT, config_hash, job_done, job_file, write_json
from ..config.suite import Suite
from ..versions import library_versions


@dataclass
class RunSummary:
    out: Path
    jobs_total: int
    jobs_run: int
    jobs_skipped: int
    wall_s: float
    flags: list[str]
    notes: list[str] = field(default_factory=list)


def resolve_device(device: Optional[str]) -> str:
    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise QuestbenchError(f"device {device!r} requested but CUDA is not available here")
    if not (device == "cpu" or device.startswith("cuda")):
        raise QuestbenchError(f"device must be auto, cpu or cuda[:N], not {device!r}")
    return device


def sample_order(n: int, seed: int) -> np.ndarray:
    """The suite's fixed sample order: every subset is a prefix, so attack samples are corruption samples."""
    return np.random.default_rng(seed).permutation(n)


def _subset(ds, order: np.ndarray, k: Optional[int]):
    take = order[: min(k or len(order), len(order))]
    return ds.subset(np.sort(take))


def _name(model_ref: str) -> str:
    return Path(model_ref).stem if model_ref.endswith((".safetensors", ".pt", ".pth", ".bin")) else model_ref


def model_names(refs: list[str]) -> dict[str, str]:
    """name -> reference; two references with one name (a/m.safetensors, b/m.safetensors) are an error."""
    names: dict[str, str] = {}
    for ref in refs:
        name = _name(ref)
        if name in names:
            same = names[name] == ref
            raise QuestbenchError(f"model {ref!r} is listed twice" if same else
                                  f"two models would both be named {name!r}: {names[name]} and {ref}; "
                                  "rename one checkpoint file (with its card)")
        names[name] = ref
    return names


SMALL_IMAGE_PX = 64  # ImageNet-C's constants are for 224 px; at this size and below they approach chance


def small_image_warning(suite: Suite, clean) -> Optional[str]:
    """One line when on-the-fly corruptions apply ImageNet-C's constants to small images (fog at severity 1
    takes the built-in Fashion-MNIST models from ~89% to 9-12%), else None."""
    c = suite.corruptions
    if c is None or c.mode not in ("native", "faithful") or len(clean) == 0:
        return None
    side = min(clean[0][0].shape[-2:])
    imagenet_constants = c.engine == "imagecorruptions" or c.params == "imagenet-c"
    if side > SMALL_IMAGE_PX or not imagenet_constants:
        return None
    return (f"warning: corruptions use ImageNet-C's constants (calibrated for 224 px) on {side} px images, where "
            "fog, contrast, frost, brightness and snow approach chance; for small images set "
            'engine = "torch" and params = "cifar-c" in [corruptions]')


def model_fingerprint(model) -> str:
    """The checkpoint file's sha256, or for weights that came without one (timm hub) a hash of the state_dict."""
    if model.card.get("sha256"):
        return model.card["sha256"]
    import hashlib
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return "state_dict:" + h.hexdigest()


def device_kind(device: str) -> str:
    """What of the device changes numbers: on a CPU, the instruction set the kernels use. oneDNN's AVX-512 and
    AVX2 convolutions round differently, and that flips single PGD outcomes (the default suite's PGD 8/255 cell
    is 25.20% on AVX-512 and 25.40% with ONEDNN_MAX_CPU_ISA=AVX2, one sample of 500), so results from machines
    with different instruction sets are not mixed in one folder."""
    import os
    if device.startswith("cuda"):
        return f"cuda:{torch.cuda.get_device_name(torch.device(device))}"
    isa = torch.backends.cpu.get_cpu_capability()
    forced = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return f"cpu:{isa}" + (f":onednn={forced}" if forced else "")


def dataset_fingerprint(ds) -> str:
    """Content hash of an in-memory dataset; sample ids, labels and eval view of a folder (hashing every file
    of ImageNet would cost minutes; the ids are relative paths)."""
    if hasattr(ds, "sha256"):
        return ds.sha256()
    view = {"resize": getattr(ds, "resize", None), "crop": getattr(ds, "crop", None)}
    # a shift set's protocol decides correctness too: ReaL's label sets, the A/R class mask
    sets = getattr(ds, "label_sets", None)
    mask = getattr(ds, "class_mask", None)
    return config_hash({"ids": list(ds.sample_ids), "labels": [int(x) for x in ds.labels], "view": view,
                        "label_sets": [list(s) for s in sets] if sets is not None else None,
                        "class_mask": np.flatnonzero(mask).tolist() if mask is not None else None})


class Runner:
    def __init__(self, suite: Suite, out, device: Optional[str] = None, limit: Optional[int] = None,
                 quiet: bool = False, registry_files=None, overwrite: bool = False, models=None,
                 ranks: Optional[distributed.Ranks] = None):
        self.suite = suite
        self.out = Path(out)
        self.ranks = ranks or distributed.from_env()
        if models is not None and self.ranks.world > 1:
            raise QuestbenchError("models given as Python objects run in one process, not under torchrun")
        self.device = distributed.rank_device(resolve_device(device or suite.device), self.ranks)
        self.limit = limit
        self.quiet = quiet or not self.ranks.main  # one progress display: rank 0's
        self.registry_files = list(registry_files or []) + list(suite.registry)
        self.overwrite = overwrite
        self.given_models = dict(models) if models is not None else None  # name -> nn.Module, from Python
        self.notes: list[str] = []
        self.prepared = False
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise QuestbenchError(f"--limit must be a positive integer, not {limit!r}")

    # --- preparation: everything that can fail does so here, before any job runs ---------------------
    def prepare(self) -> None:
        s = self.suite
        check_writable(self.out)
        ds = load_dataset(s.data.dataset, s.data.split, root=s.data.root, **s.data.loader_kwargs())
        order = sample_order(len(ds), s.seed)
        cap = lambda k: min(x for x in (k, s.data.samples, self.limit, len(ds)) if x)  # noqa: E731
        clean = _subset(ds, order, cap(s.data.samples))
        corr = _subset(ds, order, cap(s.corruptions.samples)) if s.corruptions else None
        attacks = [_subset(ds, order, cap(a.samples)) for a in s.sweeps]
        diag = _subset(ds, order, cap(s.diagnostics_samples)) if s.diagnostics_samples else None
        from ..data.shifts import load_shift
        shifts = {}
        for name, sh in s.shifts.items():
            full = load_shift(name, sh.root, sh.labels)  # its own size: data.samples caps the main set only
            k = min(x for x in (sh.samples, self.limit, len(full)) if x)
            shifts[name] = _subset(full, sample_order(len(full), s.seed), k)
        every = [d for d in (clean, corr, diag, *attacks, *shifts.values()) if d is not None]
        self.data = PreparedData(clean, corr, attacks, diag, shifts, {id(d): dataset_fingerprint(d) for d in every})
        if self.given_models is not None:
            self.models = {}
            for name, m in self.given_models.items():
                try:
                    self.models[name] = m.to(self.device).eval()
                except (NotImplementedError, RuntimeError) as exc:  # e.g. a model on the meta device
                    raise QuestbenchError(f"model {name} cannot be moved to {self.device}: "
                                          f"{str(exc).splitlines()[0][:160]}") from None
        else:
            self.models = {name: load_model(ref, registry_files=self.registry_files, device=self.device)
                           for name, ref in model_names(s.models).items()}
        warning = small_image_warning(s, clean)
        if warning and warning not in self.notes:
            self.notes.append(warning)
        self.released_source = None
        if s.corruptions and s.corruptions.mode in ("imagenet-c", "cifar-c"):
            self.released_source = self._released_source()
        self._check_logits()
        self._model_fp = {m: model_fingerprint(model) for m, model in self.models.items()}
        self._versions = {k: v for k, v in library_versions().items() if k != "python"}
        self._device_kind = device_kind(self.device)
        self.prepared = True

    def _check_logits(self) -> None:
        """One forward on two clean images per model before any job: logits must be (images, classes) with a
        class for every label and finite values, else the run is refused here, with nothing written."""
        ds = self.data.clean
        x = torch.stack([ds[i][0] for i in range(min(2, len(ds)))]).to(self.device)
        top_label = int(max(int(v) for v in ds.labels)) if len(ds) else 0
        for name, model in self.models.items():
            from ..evaluators.common import autocast_for
            try:
                with torch.no_grad(), autocast_for(self.suite.precision, self.device):
                    z = model(x)
            except (RuntimeError, ValueError, TypeError, IndexError) as exc:
                raise QuestbenchError(f"model {name} fails on the suite's images "
                                      f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
            if isinstance(z, torch.Tensor):
                z = z.float()  # bf16 logits under autocast: the checks below read float32
            if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[0] != len(x):
                shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
                raise QuestbenchError(f"model {name} returns {shape} for {len(x)} images, not (images, classes) "
                                      "logits")
            if z.shape[1] <= top_label:
                raise QuestbenchError(f"model {name} has {z.shape[1]} outputs but the data has label {top_label}")
            if not torch.isfinite(z).all():
                raise QuestbenchError(f"model {name} gives non-finite logits (NaN or inf) on the suite's images: "
                                      "check its weights and its mean/std")
            for spec in self.suite.sweeps:
                for cfg in spec.configs:
                    if isinstance(cfg, PatchConfig):
                        from ..evaluators.patch import check_patch_geometry
                        try:
                            check_patch_geometry(model, cfg, tuple(x.shape[-2:]))
                        except QuestbenchError as exc:
                            raise QuestbenchError(f"model {name}: {exc}") from None

    def _released_source(self):
        """Checks the released tree once; returns corruption dataset (or a part of it) -> its grid source."""
        c = self.suite.corruptions
        if c.mode == "imagenet-c":
            from ..data.imagenet_c import ImageNetCSource, check_alignment, check_imagenet_c_tree
            check_imagenet_c_tree(c.root, c.names, c.severities)
            check_alignment(ImageNetCSource(c.root, self.data.corruption), c.settings())
            return lambda ds: ImageNetCSource(c.root, ds)
        from ..data.cifar_c import CifarCSource, check_cifar_c_folder
        check_cifar_c_folder(c.root, c.names)
        return lambda ds: CifarCSource(c.root, [int(sid.split("/")[-1]) for sid in ds.sample_ids])

    def jobs(self) -> list[Job]:
        return plan_jobs(self.suite, self.data, self._model_fp, self._device_kind, self._versions,
                         self.partners())

    def partners(self) -> dict[str, str]:
        """Each model's partner in its trained pair (a transfer check attacks from it): the model its card's
        ``pair`` names when the suite has it, else the first model whose ``pair`` names this one."""
        pair = {m: (getattr(model, "card", None) or {}).get("pair", "") for m, model in self.models.items()}
        out = {}
        for m, p in pair.items():
            mates = [p] if p in pair and p != m else [o for o, q in pair.items() if q == m and o != m]
            if mates:
                out[m] = mates[0]
        return out

    def run_config(self) -> dict[str, Any]:
        """What makes two runs the same run: a folder holds results of one such configuration only."""
        s = self.suite
        return {"suite": {k: v for k, v in s.as_dict().items() if k not in ("path", "sha256")},
                "suite_sha256": s.sha256, "limit": self.limit, "device": self._device_kind,
                "models": dict(sorted(self._model_fp.items())), "versions": self._versions}

    # --- provenance -------------------------------------------------------------------------------------
    def provenance(self, jobs: list[Job]) -> dict[str, Any]:
        s, d = self.suite, self.data
        models = {}
        for name, model in self.models.items():
            card = model.card
            models[name] = {"attention": model.spec.attention, "arch": model.spec.arch, "pair": card.get("pair", ""),
                            "sha256": self._model_fp[name], "source": card.get("registry_entry", {}).get("source",
                                                                                                 card.get("path", ""))}
        corr_impl = "imagecorruptions-imaug " + library_versions()["imagecorruptions"]
        if s.corruptions and s.corruptions.mode in ("imagenet-c", "cifar-c"):
            corr_impl = f"released {s.corruptions.mode} at {s.corruptions.root}"
        elif s.corruptions and s.corruptions.engine == "torch":
            params = {"auto": "CIFAR-10-C constants at <= 64 px, ImageNet-C above", "cifar-c": "CIFAR-10-C constants",
                      "imagenet-c": "ImageNet-C constants"}[s.corruptions.params]
            from ..evaluators.torch_corruptions import ENGINE_VERSION
            corr_impl = (f"questbench torch engine v{ENGINE_VERSION} ({params}); reference imagecorruptions-imaug "
                         f"{library_versions()['imagecorruptions']}")
        return {
            "format": STORE_FORMAT, "run_config": self.run_config(), "jobs": {j.job_id: j.key_sha256 for j in jobs},
            "suite": s.as_dict(), "suite_sha256": s.sha256, "versions": library_versions(), "models": models,
            "device": self.device, "device_name": torch.cuda.get_device_name(torch.device(self.device)) if self.device.startswith("cuda")
            else f"cpu ({platform.machine()}, {torch.get_num_threads()} threads per rank)",
            "dtype": s.precision, "seed": s.seed, "limit": self.limit, "ranks": self.ranks.world,
            "corruption_implementation": corr_impl,
            "dataset": {"name": d.clean.name, "source": d.clean.source, "split": s.data.split,
                        "content_sha256": d.fingerprints[id(d.clean)]},
            "sample_ids": {"clean": list(d.clean.sample_ids),
                           "corruption": list(d.corruption.sample_ids) if d.corruption is not None else [],
                           **{f"attack[{i}]": list(a.sample_ids) for i, a in enumerate(d.attacks)},
                           "diagnostics": list(d.diagnostics.sample_ids) if d.diagnostics is not None else [],
                           **{f"shift[{n}]": list(x.sample_ids) for n, x in d.shifts.items()}},
            "shifts": {n: {"source": x.source, "images": len(x), "excluded_without_labels": getattr(x, "excluded", 0)}
                       for n, x in d.shifts.items()},
        }

    # --- the three steps --------------------------------------------------------------------------------
    def _job_doc(self, job: Job, wall: float, flags=(), config=None) -> dict[str, Any]:
        model = self.models[job.model]
        doc = {"format": STORE_FORMAT, "model": job.model, "attention": model.spec.attention,
               "pair": model.card.get("pair", ""), "evaluation": job.evaluation, "setting": job.setting,
               "samples": job.samples, "wall_s": round(wall, 3), "flags": list(flags), "device": self.device,
               "dtype": self.suite.precision, "checkpoint_sha256": self._model_fp[job.model],
               "suite_sha256": self.suite.sha256, "key_sha256": job.key_sha256, "key": job.key}
        for k in ("corruption", "severity", "attack", "norm", "eps"):
            doc[k] = job.fields.get(k)
        doc["sweep"] = job.fields.get("a_idx")  # which [[attacks]] entry: the eps values of one sweep belong together
        if "source" in job.fields:
            doc["source"] = job.fields["source"]  # a transfer check: the model the attack was crafted on
        if config is not None:
            doc["config"] = config
        return doc

    def preflight(self) -> RunSummary:
        """Everything that can fail before a job runs, done in this process before ranks are launched (so that a
        user error is one line, printed once): prepare, plan, claim the folder. Returns the summary so far."""
        start = time.perf_counter()
        self.prepare()
        jobs = self.jobs()
        with exclusive(self.out):
            moved = claim(self.out, self.run_config(), {j.job_id for j in jobs}, self.overwrite)
        pending = sum(not job_done(self.out, j.job_id) for j in jobs)
        return RunSummary(self.out, len(jobs), pending, len(jobs) - pending, time.perf_counter() - start, [],
                          self.notes + ([moved] if moved else []))

    def run(self) -> RunSummary:
        start = time.perf_counter()
        self.prepare()
        jobs = self.jobs()
        distributed.init(self.ranks, self.device)
        try:
            with self._claimed(jobs):
                # rank 0 counts before any rank writes (the others wait at the barrier); only its count is reported
                pending = [j for j in jobs if not job_done(self.out, j.job_id)]
                distributed.barrier(self.ranks)  # the folder is claimed before any rank writes into it
                self._execute(jobs)
                distributed.barrier(self.ranks)  # every rank's share is written: merge what was split
                if self.ranks.main:
                    self._merge(pending)
        finally:
            distributed.shutdown(self.ranks)
        flags = self._flags(pending) if self.ranks.main else []
        return RunSummary(self.out, len(jobs), len(pending), len(jobs) - len(pending), time.perf_counter() - start,
                          flags, self.notes)

    @contextlib.contextmanager
    def _claimed(self, jobs: list[Job]):
        """Rank 0 holds the folder's lock for the run, after checking it holds this configuration only."""
        if not self.ranks.main:
            yield
            return
        with exclusive(self.out):
            moved = claim(self.out, self.run_config(), {j.job_id for j in jobs}, self.overwrite)
            if moved:
                self.notes.append(moved)
            with exclusive(self.out) if moved else contextlib.nullcontext():
                write_json(self.out / PROVENANCE, self.provenance(jobs))
                yield

    def _execute(self, jobs: list[Job]) -> None:
        """Run this rank's share of the units not yet written. Attacks under several ranks are drawn one unit at
        a time from a shared counter (their cost is unpredictable); every other kind is shared out by the plan.
        A job this rank computes whole is written as its job file, a part of one as a part file."""
        by_id = {j.job_id: j for j in jobs}
        todo = lambda u: not job_done(self.out, u.job_id) and not part_done(self.out, u.job_id, u.start, u.stop)  # noqa: E731
        drawn = {"attack", "check"} if self.ranks.world > 1 else set()
        mine: dict[str, list[tuple[int, int]]] = {}
        for u in share(jobs, self.ranks.world)[self.ranks.rank]:
            if u.kind not in drawn and todo(u):
                mine.setdefault(u.job_id, []).append((u.start, u.stop))
        work = {k: [(by_id[i], spans) for i, spans in mine.items() if by_id[i].evaluation == k] for k in KINDS}
        # the plan's queue, the same list on every rank whenever it looks; finished units are skipped when drawn
        drawn_units = {k: queue(jobs, k) for k in drawn}
        # corruption workers: the suite's number per host, divided between the ranks on it
        local = int(os.environ.get("LOCAL_WORLD_SIZE", self.ranks.world))
        ctx = Context(self.suite, self.models, self.data, self.device, self.suite.num_workers // max(1, local),
                      self.released_source)
        held: dict[str, dict[tuple[int, int], Part]] = {}
        totals = {k: sum(b - a for _, spans in work[k] for a, b in spans) for k in KINDS}
        counted = {u for k in drawn for u in drawn_units[k] if todo(u)}  # what the progress bar counts
        totals |= {k: sum(u.stop - u.start for u in drawn_units[k] if u in counted) for k in drawn}
        with progress_bar(self.quiet) as bar:
            jp = JobProgress(bar, totals)
            ctx.show = jp.show
            for kind in KINDS:
                advance = lambda n, k=kind: jp.advance(k, n)  # noqa: E731
                if kind in drawn:
                    self._execute_drawn(ctx, by_id, drawn_units[kind], kind, advance, todo, counted)
                    continue
                for job, parts in run_executor(kind, ctx, work[kind], advance):
                    got = held.setdefault(job.job_id, {})
                    got.update({(p.start, p.stop): p for p in parts})
                    if merge_job(self.out, job.job_id, job.spans(), got, lambda *a, job=job: self._job_doc(job, *a)):
                        got.clear()
                    elif all(s in got for s in mine[job.job_id]):  # this rank's share is done, others hold the rest
                        for p in got.values():
                            write_part(self.out, job.job_id, p)
                        got.clear()

    def _execute_drawn(self, ctx: Context, by_id: dict[str, Job], units: list, kind: str, advance, todo,
                       counted: set) -> None:
        """Units drawn one at a time; each written as a part at once, then merged if its job is complete. A unit
        an earlier run finished is skipped when drawn. The progress bar counts units other ranks drew as they
        are drawn."""
        size = lambda us: sum(u.stop - u.start for u in us if u in counted)  # noqa: E731
        tickets = distributed.Tickets(self.ranks, kind)
        seen = 0
        while (i := tickets.draw()) < len(units):
            advance(size(units[seen:i]))
            seen = i + 1
            u = units[i]
            if not todo(u):
                continue
            job = by_id[u.job_id]
            for _, parts in run_executor(kind, ctx, [(job, [(u.start, u.stop)])], advance):
                for p in parts:
                    write_part(self.out, job.job_id, p)
            merge_job(self.out, job.job_id, job.spans(), {}, lambda *a, job=job: self._job_doc(job, *a))
        advance(size(units[seen:]))

    def _merge(self, pending: list[Job]) -> None:
        for job in pending:
            if not merge_job(self.out, job.job_id, job.spans(), {}, lambda *a, job=job: self._job_doc(job, *a)):
                raise QuestbenchError(f"job {job.job_id} is missing parts after every rank finished; "
                                      "run the same command again to compute them")
        with contextlib.suppress(OSError):  # absent, or parts of another chunking are left in it
            (self.out / SHARDS_DIR).rmdir()

    def _flags(self, jobs: list[Job]) -> list[str]:
        flags = []
        for job in jobs:
            f = job_file(self.out, job.job_id)
            if job.evaluation in ("attack", "check") and f.is_file():
                flags += [f"{job.model} {job.setting}: {x}" for x in json.loads(f.read_bytes())["job"]["flags"]]
        return flags


def run_suite(suite: Suite, out, **kwargs) -> RunSummary:
    """Run ``suite`` into the folder ``out`` (resuming a run of the same configuration there)."""
    return Runner(suite, out, **kwargs).run()
