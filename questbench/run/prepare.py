"""Preparation, the first step of a run: everything that can fail does so here, before any job runs or anything
is written. The suite's datasets are loaded, capped and ordered, its models loaded and checked on two images,
and both fingerprinted; the result is one value (Prepared) the later steps read.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from ..config.settings import PatchConfig
from ..config.suite import Suite
from ..data import load_dataset
from ..errors import QuestbenchError
from ..models.registry import load_model
from .._io import config_hash
from ..versions import library_versions
from ..kinds import Job
from .plan import PreparedData, plan_jobs


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
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return "state_dict:" + h.hexdigest()


def model_architecture(model) -> str:
    """A hash of everything about a loaded model except its weights that changes its outputs: the module tree
    (each layer's class and settings, so an attention kind swapped in place shows), the preprocessing (input
    size, interpolation, mean and std, kept in buffers that no checkpoint stores) and the registry spec. A job
    is reused only for the same weights and the same architecture."""
    h = hashlib.sha256(str(model).encode())
    for k, v in sorted(model.named_buffers()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    spec = getattr(model, "spec", None)
    if hasattr(spec, "model_dump"):
        h.update(json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode())
    return h.hexdigest()


def device_kind(device: str) -> str:
    """What of the device changes numbers: on a CPU, the instruction set the kernels use. oneDNN's AVX-512 and
    AVX2 convolutions round differently, and that flips single PGD outcomes (the default suite's PGD 8/255 cell
    is 25.20% on AVX-512 and 25.40% with ONEDNN_MAX_CPU_ISA=AVX2, one sample of 500), so results from machines
    with different instruction sets are not mixed in one folder."""
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


@dataclass
class Prepared:
    """A suite made ready to run on one device: its datasets and models, loaded and checked, with the
    fingerprints that identify them."""

    suite: Suite
    device: str
    limit: Optional[int]
    data: PreparedData
    models: dict[str, Any]  # name -> model on the device, in eval mode
    model_fp: dict[str, str]  # name -> checkpoint sha256 (or state_dict hash)
    model_arch: dict[str, str]  # name -> hash of its module tree, preprocessing and spec (model_architecture)
    device_kind: str
    versions: dict[str, str]  # library versions that change numbers (python is not one)
    released_source: Optional[Callable] = None  # released corruption sets: dataset -> its grid source
    notes: list[str] = field(default_factory=list)

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

    def jobs(self) -> list[Job]:
        return plan_jobs(self.suite, self.data, self.model_fp, self.device_kind, self.versions, self.partners(),
                         self.model_arch)

    def run_config(self) -> dict[str, Any]:
        """What makes two runs the same run: a folder holds results of one such configuration only."""
        s = self.suite
        return {"suite": {k: v for k, v in s.as_dict().items() if k not in ("path", "sha256")},
                "suite_sha256": s.sha256, "limit": self.limit, "device": self.device_kind,
                "models": {m: {"sha256": fp, "architecture": self.model_arch[m]} for m, fp in sorted(self.model_fp.items())},
                "versions": self.versions}


def _load_data(s: Suite, limit: Optional[int]) -> PreparedData:
    ds = load_dataset(s.data.dataset, s.data.split, root=s.data.root, **s.data.loader_kwargs())
    order = sample_order(len(ds), s.seed)

    def first(k: Optional[int]):  # the seeded order's prefix of k samples, capped by data.samples and --limit
        return _subset(ds, order, min(x for x in (k, s.data.samples, limit, len(ds)) if x))

    clean = first(s.data.samples)
    corr = first(s.corruptions.samples) if s.corruptions else None
    attacks = [first(a.samples) for a in s.sweeps]
    diag = first(s.diagnostics_samples) if s.diagnostics_samples else None
    from ..data.shifts import load_shift
    shifts = {}
    for name, sh in s.shifts.items():
        full = load_shift(name, sh.root, sh.labels)  # its own size: data.samples caps the main set only
        k = min(x for x in (sh.samples, limit, len(full)) if x)
        shifts[name] = _subset(full, sample_order(len(full), s.seed), k)
    every = [d for d in (clean, corr, diag, *attacks, *shifts.values()) if d is not None]
    return PreparedData(clean, corr, attacks, diag, shifts, {id(d): dataset_fingerprint(d) for d in every})


def _load_models(s: Suite, device: str, registry_files: list, given: Optional[dict]) -> dict[str, Any]:
    from ..models.attention import fuse_where_it_pays

    models = _models_on(s, device, registry_files, given)
    for m in models.values():
        fuse_where_it_pays(m, device)
    return models


def _models_on(s: Suite, device: str, registry_files: list, given: Optional[dict]) -> dict[str, Any]:
    if given is None:
        return {name: load_model(ref, registry_files=registry_files, device=device)
                for name, ref in model_names(s.models).items()}
    models = {}
    for name, m in given.items():
        try:
            models[name] = m.to(device).eval()
        except (NotImplementedError, RuntimeError) as exc:  # e.g. a model on the meta device
            raise QuestbenchError(f"model {name} cannot be moved to {device}: "
                                  f"{str(exc).splitlines()[0][:160]}") from None
    return models


def _check_logits(s: Suite, models: dict[str, Any], data: PreparedData, device: str) -> None:
    """One forward on two clean images per model before any job: logits must be (images, classes) with a
    class for every label and finite values, and every patch attack must fit the model, else the run is
    refused here, with nothing written."""
    from ..evaluators.common import autocast_for
    ds = data.clean
    x = torch.stack([ds[i][0] for i in range(min(2, len(ds)))]).to(device)
    top_label = int(max(int(v) for v in ds.labels)) if len(ds) else 0
    patches = [cfg for spec in s.sweeps for cfg in spec.configs if isinstance(cfg, PatchConfig)]
    for name, model in models.items():
        try:
            with torch.no_grad(), autocast_for(s.precision, device):
                z = model(x)
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            hint = (f"; its images reach it at {tuple(x.shape[1:])}: for another size set data.resize and "
                    "data.crop (0: as stored) or give the model preprocessing with its input_size")
            raise QuestbenchError(f"model {name} fails on the suite's images "
                                  f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}){hint}") from None
        if isinstance(z, torch.Tensor) and not z.is_floating_point():  # attacks need a gradient through them
            raise QuestbenchError(f"model {name} returns {z.dtype} logits; a classifier's logits are floating point "
                                  "(the attacks differentiate through them)")
        if isinstance(z, torch.Tensor):
            z = z.float()  # bf16 logits under autocast: the checks below read float32
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[0] != len(x):
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise QuestbenchError(f"model {name} returns {shape} for {len(x)} images, not (images, classes) logits")
        if z.shape[1] <= top_label:
            raise QuestbenchError(f"model {name} has {z.shape[1]} outputs but the data has label {top_label}")
        folder_classes = getattr(ds, "class_names", None)
        if folder_classes is not None and s.data.classes is None and len(folder_classes) != z.shape[1]:
            # labels are the folder's sorted class order: with fewer (or more) classes than the model has
            # outputs they name other classes of the model, and accuracy would be silently wrong (issue 38)
            raise QuestbenchError(f"the image folder has {len(folder_classes)} class folders and model {name} has "
                                  f"{z.shape[1]} outputs: labels follow the folder order, so they would not be the "
                                  "model's classes; set data.classes to a file listing the model's classes in its "
                                  "output order")
        if not torch.isfinite(z).all():
            raise QuestbenchError(f"model {name} gives non-finite logits (NaN or inf) on the suite's images: "
                                  "check its weights and its mean/std")
        for cfg in patches:
            from ..evaluators.patch import check_patch_geometry
            try:
                check_patch_geometry(model, cfg, tuple(x.shape[-2:]))
            except QuestbenchError as exc:
                raise QuestbenchError(f"model {name}: {exc}") from None


def _released_source(s: Suite, data: PreparedData) -> Optional[Callable]:
    """For released corruption sets: the tree checked once; returns dataset (or a part of it) -> its grid
    source. None for corruptions made on the fly."""
    c = s.corruptions
    if c is None or c.mode not in ("imagenet-c", "cifar-c"):
        return None
    if c.mode == "imagenet-c":
        from ..data.imagenet_c import ImageNetCSource, check_alignment, check_imagenet_c_tree
        check_imagenet_c_tree(c.root, c.names, c.severities)
        check_alignment(ImageNetCSource(c.root, data.corruption), c.settings())
        return lambda ds: ImageNetCSource(c.root, ds)
    from ..data.cifar_c import CifarCSource, check_cifar_c_folder
    check_cifar_c_folder(c.root, c.names)
    return lambda ds: CifarCSource(c.root, [int(sid.split("/")[-1]) for sid in ds.sample_ids])


def prepare(suite: Suite, device: str, limit: Optional[int] = None, registry_files=(),
            given_models: Optional[dict] = None) -> Prepared:
    """Load and check what ``suite`` runs on ``device`` (``given_models``: name -> nn.Module from Python,
    instead of the suite's model list)."""
    data = _load_data(suite, limit)
    models = _load_models(suite, device, list(registry_files), given_models)
    warning = small_image_warning(suite, data.clean)
    released = _released_source(suite, data)
    _check_logits(suite, models, data, device)
    return Prepared(suite, device, limit, data, models, {m: model_fingerprint(model) for m, model in models.items()},
                    {m: model_architecture(model) for m, model in models.items()}, device_kind(device), {k: v for k, v in library_versions().items() if k != "python"},
                    released, [warning] if warning else [])
