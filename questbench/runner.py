"""Runs a suite: expands it into jobs (model x evaluation x setting), skips finished ones, writes each job's
per-sample records atomically, shows progress. Knows nothing of how attacks or corruptions work inside.

A run killed at any moment and started again into the same folder ends with the same table as an
uninterrupted run: every job's outcome is a pure function of the suite (seeds derived per sample/batch), and
a job is written in one atomic rename.
"""
from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from .data import load_dataset
from .errors import QuestbenchError
from .evaluators.attacks import evaluate_attack
from .evaluators.patch import evaluate_patch
from .settings import PatchConfig
from .evaluators.common import die_with_parent, run_with_batch_fallback
from .evaluators.corruptions import evaluate_corruptions, evaluate_released
from .progress import JobProgress, progress_bar
from .registry import load_model
from .outdir import check_writable, claim, exclusive
from .results import PROVENANCE, STORE_FORMAT, config_hash, job_done, slug, write_job, write_json
from .suite import Suite
from .versions import library_versions


@dataclass
class Job:
    model: str
    evaluation: str  # clean | corruption | attack | diagnostics
    setting: str
    samples: int
    fields: dict[str, Any] = field(default_factory=dict)  # corruption/severity or attack config
    key: dict[str, Any] = field(default_factory=dict)  # everything that determines the job's rows

    @property
    def key_sha256(self) -> str:
        return config_hash(self.key)

    @property
    def job_id(self) -> str:
        return f"{slug(f'{self.model}__{self.evaluation}__{self.setting}')}.{self.key_sha256[:16]}"


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
                 quiet: bool = False, registry_files=None, overwrite: bool = False, models=None):
        self.suite = suite
        self.out = Path(out)
        self.device = resolve_device(device or suite.device)
        self.limit = limit
        self.quiet = quiet
        self.registry_files = list(registry_files or []) + list(suite.registry)
        self.flags: list[str] = []
        self.overwrite = overwrite
        self.given_models = dict(models) if models is not None else None  # name -> nn.Module, from Python
        self.notes: list[str] = []
        self.show: Callable[[str, str], None] = lambda kind, now: None
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise QuestbenchError(f"--limit must be a positive integer, not {limit!r}")

    # --- preparation: everything that can fail does so here, before any job runs ---------------------
    def prepare(self) -> None:
        s = self.suite
        check_writable(self.out)
        ds = load_dataset(s.data.dataset, s.data.split, root=s.data.root, **s.data.loader_kwargs())
        order = sample_order(len(ds), s.seed)
        cap = lambda k: min(x for x in (k, s.data.samples, self.limit, len(ds)) if x)  # noqa: E731
        self.clean_ds = _subset(ds, order, cap(s.data.samples))
        self.corr_ds = _subset(ds, order, cap(s.corruptions.samples)) if s.corruptions else None
        self.attack_ds = [_subset(ds, order, cap(a.samples)) for a in s.attacks]
        self.diag_ds = _subset(ds, order, cap(s.diagnostics_samples)) if s.diagnostics_samples else None
        from .data.shifts import load_shift
        self.shift_ds = {}
        for sh in s.shifts:
            full = load_shift(sh.name, sh.root, sh.labels)  # its own size: data.samples caps the main set only
            k = min(x for x in (sh.samples, self.limit, len(full)) if x)
            self.shift_ds[sh.name] = _subset(full, sample_order(len(full), s.seed), k)
        if self.given_models is not None:
            self.models = {name: m.to(self.device).eval() for name, m in self.given_models.items()}
        else:
            self.models = {name: load_model(ref, registry_files=self.registry_files, device=self.device)
                           for name, ref in model_names(s.models).items()}
        self.source = None
        if s.corruptions and s.corruptions.mode in ("imagenet-c", "cifar-c"):
            self.source = self._released_source()

    def _released_source(self):
        c = self.suite.corruptions
        if c.mode == "imagenet-c":
            from .data.imagenet_c import ImageNetCSource, check_alignment, check_imagenet_c_tree
            check_imagenet_c_tree(c.root, c.names, c.severities)
            source = ImageNetCSource(c.root, self.corr_ds)
            check_alignment(source, c.settings())
            return source
        from .data.cifar_c import CifarCSource, check_cifar_c_folder
        check_cifar_c_folder(c.root, c.names)
        return CifarCSource(c.root, [int(sid.split("/")[-1]) for sid in self.corr_ds.sample_ids])

    def _common_key(self, model: str, evaluation: str, ds) -> dict[str, Any]:
        s = self.suite
        return {"format": STORE_FORMAT, "model_sha256": self._model_fp[model], "evaluation": evaluation,
                "dataset": {"name": ds.name, "split": s.data.split, "content": self._data_fp[id(ds)],
                            "sample_ids": config_hash(list(ds.sample_ids))},
                "seed": s.seed, "precision": s.precision, "batch_size": s.batch_size,
                "device": self._device_kind, "versions": self._versions}

    def jobs(self) -> list[Job]:
        s = self.suite
        self._model_fp = {m: model_fingerprint(model) for m, model in self.models.items()}
        self._versions = {k: v for k, v in library_versions().items() if k != "python"}
        self._device_kind = device_kind(self.device)
        datasets = [d for d in (self.clean_ds, self.corr_ds, self.diag_ds, *self.attack_ds,
                                *self.shift_ds.values()) if d is not None]
        self._data_fp = {id(d): dataset_fingerprint(d) for d in datasets}
        jobs: list[Job] = []
        for m in self.models:
            if s.clean:
                jobs.append(Job(m, "clean", "clean", len(self.clean_ds), key=self._common_key(m, "clean", self.clean_ds)))
        if s.corruptions:
            c = s.corruptions
            source = {"mode": c.mode, "root": str(Path(c.root).resolve()) if c.root else None}
            for st in c.settings():  # setting-major: one corrupted batch serves every model
                for m in self.models:
                    key = self._common_key(m, "corruption", self.corr_ds) | {
                        "corruption": st.corruption, "severity": st.severity, "source": source}
                    jobs.append(Job(m, "corruption", st.key, len(self.corr_ds),
                                    {"corruption": st.corruption, "severity": st.severity}, key))
        for a_idx, spec in enumerate(s.attacks):
            for cfg in spec.configs:
                for m in self.models:
                    key = self._common_key(m, "attack", self.attack_ds[a_idx]) | {
                        "attack": cfg.resolved(), "batch_size": spec.batch_size or s.batch_size}
                    jobs.append(Job(m, "attack", cfg.key, len(self.attack_ds[a_idx]),
                                    {"attack": cfg.attack, "norm": cfg.norm, "eps": cfg.eps, "a_idx": a_idx,
                                     "config": cfg}, key))
        for name, sds in self.shift_ds.items():
            for m in self.models:
                key = self._common_key(m, "shift", sds) | {"shift": name, "protocol": "questbench.data.shifts/1"}
                jobs.append(Job(m, "shift", name, len(sds), {"dataset": name}, key))
        if self.diag_ds is not None:
            for m in self.models:
                jobs.append(Job(m, "diagnostics", "attention", len(self.diag_ds),
                                key=self._common_key(m, "diagnostics", self.diag_ds)))
        return jobs

    def run_config(self) -> dict[str, Any]:
        """What makes two runs the same run: a folder holds results of one such configuration only."""
        s = self.suite
        return {"suite": {k: v for k, v in s.as_dict().items() if k not in ("path", "sha256")},
                "suite_sha256": s.sha256, "limit": self.limit, "device": self._device_kind,
                "models": dict(sorted(self._model_fp.items())), "versions": self._versions}

    # --- provenance -------------------------------------------------------------------------------------
    def provenance(self, jobs: list[Job]) -> dict[str, Any]:
        s = self.suite
        models = {}
        for name, model in self.models.items():
            card = model.card
            models[name] = {"attention": model.spec.attention, "arch": model.spec.arch, "pair": card.get("pair", ""),
                            "sha256": self._model_fp[name], "source": card.get("registry_entry", {}).get("source",
                                                                                                 card.get("path", ""))}
        corr_impl = "imagecorruptions-imaug " + library_versions()["imagecorruptions"]
        if s.corruptions and s.corruptions.mode in ("imagenet-c", "cifar-c"):
            corr_impl = f"released {s.corruptions.mode} at {s.corruptions.root}"
        return {
            "format": STORE_FORMAT, "run_config": self.run_config(), "jobs": {j.job_id: j.key_sha256 for j in jobs},
            "suite": s.as_dict(), "suite_sha256": s.sha256, "versions": library_versions(), "models": models,
            "device": self.device, "device_name": torch.cuda.get_device_name() if self.device.startswith("cuda")
            else f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)",
            "dtype": s.precision, "seed": s.seed, "limit": self.limit, "attack_processes": self.attack_processes(),
            "corruption_implementation": corr_impl,
            "dataset": {"name": self.clean_ds.name, "source": self.clean_ds.source, "split": s.data.split,
                        "content_sha256": self._data_fp[id(self.clean_ds)]},
            "sample_ids": {"clean": list(self.clean_ds.sample_ids),
                           "corruption": list(self.corr_ds.sample_ids) if self.corr_ds is not None else [],
                           **{f"attack[{i}]": list(d.sample_ids) for i, d in enumerate(self.attack_ds)},
                           "diagnostics": list(self.diag_ds.sample_ids) if self.diag_ds is not None else [],
                           **{f"shift[{n}]": list(d.sample_ids) for n, d in self.shift_ds.items()}},
            "shifts": {n: {"source": d.source, "images": len(d), "excluded_without_labels": getattr(d, "excluded", 0)}
                       for n, d in self.shift_ds.items()},
        }

    # --- execution --------------------------------------------------------------------------------------
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
        if config is not None:
            doc["config"] = config
        return doc

    def run(self) -> RunSummary:
        start = time.perf_counter()
        self.prepare()
        jobs = self.jobs()
        planned = {j.job_id for j in jobs}
        with exclusive(self.out):
            moved = claim(self.out, self.run_config(), planned, self.overwrite)
            if moved:
                self.notes.append(moved)
                with exclusive(self.out):
                    return self._execute(jobs, start)
            return self._execute(jobs, start)

    def _execute(self, jobs: list[Job], start: float) -> RunSummary:
        pending = [j for j in jobs if not job_done(self.out, j.job_id)]
        write_json(self.out / PROVENANCE, self.provenance(jobs))
        with progress_bar(self.quiet) as bar:
            kinds = ("clean", "shift", "corruption", "attack", "diagnostics")
            jp = JobProgress(bar, {k: sum(j.samples for j in pending if j.evaluation == k) for k in kinds})
            self.show = jp.show
            step: dict[str, Callable[[int], None]] = {k: (lambda n, k=k: jp.advance(k, n)) for k in kinds}
            self._run_clean([j for j in pending if j.evaluation == "clean"], step["clean"])
            self._run_shifts([j for j in pending if j.evaluation == "shift"], step["shift"])
            self._run_corruptions([j for j in pending if j.evaluation == "corruption"], step["corruption"])
            self._run_attacks([j for j in pending if j.evaluation == "attack"], step["attack"])
            for j in (j for j in pending if j.evaluation == "diagnostics"):
                self._run_diagnostics(j, step["diagnostics"])
        return RunSummary(self.out, len(jobs), len(pending), len(jobs) - len(pending),
                          time.perf_counter() - start, self.flags, self.notes)

    def _run_clean(self, jobs: list[Job], advance) -> None:
        ds = self.clean_ds
        for job in jobs:
            self.show("clean", job.model)
            t0 = time.perf_counter()
            model = self.models[job.model]
            records = run_with_batch_fallback(lambda bs: _predict(model, ds, bs, self.device, advance),
                                              self.suite.batch_size)
            write_job(self.out, job.job_id, self._job_doc(job, time.perf_counter() - t0), records)

    def _run_shifts(self, jobs: list[Job], advance) -> None:
        from .evaluators.shift import evaluate_shift
        for job in jobs:
            self.show("shift", f"{job.model} {job.setting}")
            ds, model = self.shift_ds[job.setting], self.models[job.model]
            t0 = time.perf_counter()
            records = run_with_batch_fallback(lambda bs: evaluate_shift(model, ds, bs, self.device, advance),
                                              self.suite.batch_size)
            write_job(self.out, job.job_id, self._job_doc(job, time.perf_counter() - t0), records)

    def _run_corruptions(self, jobs: list[Job], advance) -> None:
        if not jobs:
            return
        wanted: dict[str, set[str]] = {}
        for j in jobs:
            wanted.setdefault(j.setting, set()).add(j.model)
        by_key = {(j.setting, j.model): j for j in jobs}
        settings = [st for st in self.suite.corruptions.settings() if st.key in wanted]
        models = {m: self.models[m] for m in self.models if any(m in v for v in wanted.values())}
        c = self.suite.corruptions
        kwargs = dict(batch_size=self.suite.batch_size, num_workers=self.suite.num_workers, device=self.device,
                      on_batch=lambda n: advance(n * len(models)))
        if self.source is None:
            it = evaluate_corruptions(models, self.corr_ds, settings, suite_seed=self.suite.seed, mode=c.mode, **kwargs)
        else:
            it = evaluate_released(models, self.source, self.corr_ds.labels, self.corr_ds.sample_ids, settings,
                                   **kwargs)
        last, last_setting, wall = time.perf_counter(), None, 0.0
        for setting, model_name, records in it:
            if setting != last_setting:  # a setting's models arrive together; share its time between them
                self.show("corruption", f"{setting.corruption} severity {setting.severity} done")
                now = time.perf_counter()
                wall, last, last_setting = (now - last) / len(models), now, setting
            job = by_key.get((setting.key, model_name))
            if job is not None:
                write_job(self.out, job.job_id, self._job_doc(job, wall), records)

    def attack_processes(self) -> int:
        """How many single-threaded processes share the attack jobs (1: run them here). Attacks that end on a
        few robust samples (AutoAttack's APGD-T, FAB-T and Square) work on batches too small for a second
        thread to help much, so on a small CPU two jobs side by side, one thread each, finish sooner than one
        after the other on both threads. Used when the suite has at least as many models as there are threads;
        decided by the suite and the machine, never by which jobs are left, so a resumed run computes with the
        same thread count."""
        import multiprocessing as mp
        threads = torch.get_num_threads()
        if self.device != "cpu" or not 2 <= threads <= len(self.suite.models):
            return 1
        if "fork" not in mp.get_all_start_methods():  # Windows: children would have to re-import and reload
            return 1
        return threads  # single-threaded children: no OpenMP pool is ever used after the fork

    def _run_attacks(self, jobs: list[Job], advance) -> None:
        procs = self.attack_processes()
        if procs == 1 or not jobs:
            for j in jobs:
                self.show("attack", _attack_text(j))
                self._run_attack(j, advance)
            return
        import multiprocessing as mp
        ctx = mp.get_context("fork")
        todo, queue = ctx.Queue(), ctx.SimpleQueue()
        # longest first (AutoAttack before PGD before FGSM), each child taking the next job when it is free:
        # every job is seeded on its own and computed on one thread, so who runs it does not change it
        for k in sorted(range(len(jobs)), key=lambda k: -_attack_cost(jobs[k])):
            todo.put(k)
        children = [ctx.Process(target=self._attack_child, args=(jobs, todo, queue), daemon=True)
                    for _ in range(min(procs, len(jobs)))]
        for c in children:
            todo.put(None)
            c.start()
        running, error = len(children), None
        try:
            while running:
                kind, value = queue.get()
                if kind == "advance":
                    advance(value)
                elif kind == "show":
                    self.show("attack", value)
                elif kind == "flag":
                    self.flags.append(value)
                elif kind == "error":
                    error = error or value
                else:  # "done"
                    running -= 1
        finally:
            for c in children:
                if error is not None or running:
                    c.terminate()
                c.join()
        if error is not None:
            raise QuestbenchError(error)

    def _attack_child(self, jobs: list[Job], todo, queue) -> None:
        import os
        import sys
        die_with_parent()
        # the parent owns the terminal (and its progress bar's thread may have held a stream lock at the fork)
        sys.stdout = sys.stderr = open(os.devnull, "w")
        torch.set_num_threads(1)
        try:
            for k in iter(todo.get, None):
                j = jobs[k]
                n_flags = len(self.flags)
                queue.put(("show", _attack_text(j)))
                self._run_attack(j, lambda n: queue.put(("advance", n)))
                for f in self.flags[n_flags:]:
                    queue.put(("flag", f))
        except QuestbenchError as exc:
            queue.put(("error", str(exc)))
        except BaseException as exc:  # noqa: BLE001 - reported by the parent, which owns the terminal
            queue.put(("error", f"attack worker failed: {type(exc).__name__}: {exc}"))
        finally:
            queue.put(("done", None))

    def _run_attack(self, job: Job, advance) -> None:
        cfg = job.fields["config"]
        spec = self.suite.attacks[job.fields["a_idx"]]
        ds = self.attack_ds[job.fields["a_idx"]]
        evaluate = evaluate_patch if isinstance(cfg, PatchConfig) else evaluate_attack
        t0 = time.perf_counter()
        result = run_with_batch_fallback(
            lambda bs: evaluate(self.models[job.model], ds, cfg, seed=self.suite.seed, batch_size=bs,
                                device=self.device, precision=self.suite.precision, on_batch=advance),
            spec.batch_size or self.suite.batch_size)
        for f in result.flags:
            self.flags.append(f"{job.model} {cfg.key}: {f}")
        write_job(self.out, job.job_id, self._job_doc(job, time.perf_counter() - t0, result.flags, result.config),
                  result.records)

    def _run_diagnostics(self, job: Job, advance) -> None:
        from .attention import record_attention
        self.show("diagnostics", job.model)
        t0 = time.perf_counter()
        model = self.models[job.model]
        x = torch.stack([self.diag_ds[i][0] for i in range(len(self.diag_ds))]).to(self.device)
        with torch.inference_mode(), record_attention(model) as stats:
            model(x)
        advance(len(self.diag_ds))
        records = [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in vars(st).items()} for st in stats]
        write_job(self.out, job.job_id, self._job_doc(job, time.perf_counter() - t0), records)


def _attack_text(job: Job) -> str:
    from .report.labels import attack_label, budget_label
    return f"{job.model} {attack_label(job.setting)} {budget_label(job.fields['attack'], job.fields['eps'])}"


def _attack_cost(job: Job) -> float:
    """A rough relative cost, only to start the longest attack jobs first."""
    cfg = job.fields["config"]
    if cfg.eps == 0:
        return 0.0
    r = cfg.resolved()
    return job.samples * r["restarts"] * r["steps"] * (40 if cfg.attack == "autoattack" else 1)


@torch.inference_mode()
def _predict(model, ds, batch_size: int, device: str, advance) -> list[dict[str, Any]]:
    records = []
    for start in range(0, len(ds), batch_size):
        idx = range(start, min(start + batch_size, len(ds)))
        x = torch.stack([ds[i][0] for i in idx]).to(device)
        pred = model(x).argmax(1).cpu()
        for j, i in enumerate(idx):
            label = int(ds.labels[i])
            records.append({"sample_id": ds.sample_ids[i], "label": label, "pred": int(pred[j]),
                            "correct": bool(int(pred[j]) == label)})
        advance(len(idx))
    return records


def run_suite(suite: Suite, out, **kwargs) -> RunSummary:
    """Run ``suite`` into the folder ``out`` (resuming a run of the same configuration there)."""
    return Runner(suite, out, **kwargs).run()
