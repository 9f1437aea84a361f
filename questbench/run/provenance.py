"""What a results folder says about how it was made: the run's provenance document (suite, versions, models,
device, datasets, sample ids) and each job file's header."""
from __future__ import annotations

import platform
from typing import Any, Optional

import torch

from ..store.results import STORE_FORMAT
from ..versions import library_versions
from ..kinds import Job
from .prepare import Prepared


def corruption_implementation(p: Prepared) -> str:
    """Which code made the corrupted images: the reference library, questbench's torch engine, or files."""
    c = p.suite.corruptions
    reference = "imagecorruptions-imaug " + library_versions()["imagecorruptions"]
    if c and c.mode in ("imagenet-c", "cifar-c"):
        return f"released {c.mode} at {c.root}"
    if c and c.engine == "torch":
        params = {"auto": "CIFAR-10-C constants at <= 64 px, ImageNet-C above", "cifar-c": "CIFAR-10-C constants",
                  "imagenet-c": "ImageNet-C constants"}[c.params]
        from ..evaluators.torch_corruptions import ENGINE_VERSION
        return f"questbench torch engine v{ENGINE_VERSION} ({params}); reference {reference}"
    return reference


def provenance(p: Prepared, jobs: list[Job], ranks: int) -> dict[str, Any]:
    s, d = p.suite, p.data
    models = {}
    for name, model in p.models.items():
        card = model.card
        models[name] = {"attention": model.spec.attention, "arch": model.spec.arch, "pair": card.get("pair", ""),
                        "sha256": p.model_fp[name],
                        "source": card.get("registry_entry", {}).get("source", card.get("path", ""))}
    device_name = torch.cuda.get_device_name(torch.device(p.device)) if p.device.startswith("cuda") \
        else f"cpu ({platform.machine()}, {torch.get_num_threads()} threads per rank)"
    return {
        "format": STORE_FORMAT, "run_config": p.run_config(), "jobs": {j.job_id: j.key_sha256 for j in jobs},
        "suite": s.as_dict(), "suite_sha256": s.sha256, "versions": library_versions(), "models": models,
        "device": p.device, "device_name": device_name, "dtype": s.precision, "seed": s.seed, "limit": p.limit,
        "ranks": ranks, "corruption_implementation": corruption_implementation(p),
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


def job_header(p: Prepared, job: Job, wall: float, flags=(), config: Optional[dict] = None) -> dict[str, Any]:
    """A job file's header: which model, evaluation and setting, on what, how long it took, what it flagged."""
    model = p.models[job.model]
    doc = {"format": STORE_FORMAT, "model": job.model, "attention": model.spec.attention,
           "pair": model.card.get("pair", ""), "evaluation": job.evaluation, "setting": job.setting,
           "samples": job.samples, "wall_s": round(wall, 3), "flags": list(flags), "device": p.device,
           "dtype": p.suite.precision, "checkpoint_sha256": p.model_fp[job.model],
           "suite_sha256": p.suite.sha256, "key_sha256": job.key_sha256, "key": job.key}
    for k in ("corruption", "severity", "attack", "norm", "eps"):
        doc[k] = job.fields.get(k)
    doc["sweep"] = job.fields.get("a_idx")  # which attack sweep: the eps values of one sweep belong together
    if "source" in job.fields:
        doc["source"] = job.fields["source"]  # a transfer check: the model the attack was crafted on
    if config is not None:
        doc["config"] = config
    return doc
