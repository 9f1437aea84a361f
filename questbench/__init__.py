"""questbench: is a ViT with QUEST attention more robust than the same ViT with standard attention?

Importing questbench is cheap (no torch): the command line starts in well under a second. The API below loads
what it needs on first use, and questbench's timm model names (``vit_small_patch16_224_quest``, ...) are
registered the moment timm is imported, before or after questbench, so ``timm.create_model`` finds them.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from collections.abc import Mapping
from typing import Optional

from .stats import metrics  # noqa: F401  (light: numpy)
from .errors import QuestbenchError

__version__ = "0.1.0"

_LAZY = {"ATTENTION_KINDS": "models.attention", "attention_kind": "models.attention",
         "record_attention": "models.attention", "set_attention": "models.attention"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'questbench' has no attribute {name!r}")


class _RegisterWithTimm(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Runs timm's own loader, then registers questbench's model names, when (and only if) timm is imported."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "timm":
            return None
        sys.meta_path.remove(self)  # find the real spec below; fire once
        spec = importlib.util.find_spec("timm")
        if spec is None or spec.loader is None:
            return spec
        self._loader, spec.loader = spec.loader, self
        return spec

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        importlib.import_module(".models.timm_models", __name__)  # imports timm and the catalogue only


if "timm" in sys.modules:
    from .models import timm_models  # noqa: F401
elif not any(isinstance(f, _RegisterWithTimm) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWithTimm())


def load_model(name_or_path: str, **kwargs):
    """An eval-mode model taking [0, 1] NCHW images, from a registry name or a checkpoint path."""
    from .models.registry import load_model as _load
    return _load(name_or_path, **kwargs)


def list_models(**kwargs):
    from .models.registry import list_models as _list
    return _list(**kwargs)


def load_dataset(name: str, split: str = "test", samples: Optional[int] = None, seed: int = 0, **kwargs):
    """A dataset by name (``root=`` for one on disk). ``samples``: the seeded subset a suite with this ``seed``
    and ``samples`` uses (the same images, in the same order), else all of it."""
    from .data import load_dataset as _load
    ds = _load(name, split, **kwargs)
    if samples is None:
        return ds
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise QuestbenchError(f"samples is a positive number of images, not {samples!r}")
    from .run.prepare import sample_order
    return ds.subset(sample_order(len(ds), seed)[:samples])


def _corruption_spec(corruptions, severities, mode, engine, params):
    """The suite schema's [corruptions] table for these arguments: the API takes the suites' defaults and rules
    (engine torch for native on-the-fly corruptions, its constants "auto": CIFAR-10-C's at <= 64 px)."""
    from pydantic import ValidationError

    from .config.suite import CorruptionSpec
    fields = {"names": corruptions if isinstance(corruptions, str) else list(corruptions),
              "severities": list(severities), "mode": mode, "engine": engine, "params": params}
    try:
        return CorruptionSpec(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        from .config.modelspec import describe
        raise QuestbenchError(f"corruption settings: {describe(exc)}") from None


def corruption_sweep(models, dataset, corruptions="common", severities=(1, 2, 3, 4, 5), seed: int = 0,
                     mode: str = "native", engine: Optional[str] = None, params: Optional[str] = None,
                     **kwargs) -> dict:
    """Error per model, corruption and severity, {model: {corruption: [fraction at each severity]}}, generated on
    the fly as a suite's [corruptions] table with the same keys would (the same defaults: the torch engine with
    "auto" constants for native corruptions). ``models``: registry names / checkpoint paths, or a mapping name ->
    model; ``corruptions``: "common" (the 15 of mCE), "extra", "all" or a list of names. Keyword arguments:
    batch_size, num_workers, device, quiet."""
    from .evaluators.corruptions import corruption_errors

    if isinstance(models, str):
        models = [models]
    if not isinstance(models, Mapping):
        models = {name: load_model(name) for name in models}
    if isinstance(corruptions, str) and corruptions not in ("common", "extra", "all"):
        raise QuestbenchError(f"corruptions must be 'common', 'extra', 'all' or a list of names, not {corruptions!r}")
    spec = _corruption_spec(corruptions, severities, mode, engine, params)
    if len(dataset) == 0:
        raise QuestbenchError("corruption_sweep got an empty dataset: there is no error to measure")
    return corruption_errors(models, dataset, spec.names, spec.severities, seed, mode, engine=spec.engine,
                             params=spec.params, **kwargs)


def compare(results_or_dir, baseline: str, model: str, seed: int = 0):
    """``model`` minus ``baseline`` on shared samples as a DataFrame: evaluation, setting, n_images, baseline_acc,
    model_acc, delta_pp, ci_low, ci_high, p_value, p_holm (one row per setting, one per aggregate 'all')."""
    from .report.compare import compare as _compare
    return _compare(results_or_dir, baseline, model, seed=seed)


def compare_kinds(results_or_dir):
    """Every attention kind against every other kind across trained pairs (per seed, the shared standard model
    cancels), and with all four kinds the factorial main effects of key and query normalization and their
    interaction: family, contrast, evaluation, setting, n_pairs, n_images, per_pair_delta_pp, delta_pp, ci_low,
    ci_high, se, df, p_value (the same seed-level method as ``compare_seeds``)."""
    from .report.compare import compare_kinds as _compare_kinds
    return _compare_kinds(results_or_dir)


def compare_seeds(results_or_dir):
    """Each attention kind against standard across its trained pairs, the pair as the unit: attention,
    evaluation, setting, n_pairs, n_images, per_pair_delta_pp, delta_pp, ci_low, ci_high, p_value, method
    (Student t over pairs with the shared images' variance; p = max(t, exact sign-flip over pairs))."""
    from .report.compare import compare_seeds as _compare_seeds
    return _compare_seeds(results_or_dir)


class _Preserved:
    """Leaves a user's model as it was found: training mode and which parameters require gradients."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.training = self.model.training
        self.flags = [p.requires_grad for p in self.model.parameters()]
        return self.model

    def __exit__(self, *exc):
        self.model.train(self.training)
        for p, flag in zip(self.model.parameters(), self.flags):
            p.requires_grad_(flag)


def run_suite(suite="default", out=None, device=None, limit=None, quiet: bool = True, overwrite: bool = False,
              registry=()):
    """Run a suite (a built-in name, a TOML path or a mapping of the same keys) as ``questbench run`` does, in
    this process, and return what ``load_results`` gives. Results go to ``out`` (default runs/<suite name>), a
    folder of the same configuration is resumed. (Not ``questbench.run``: that name is the package of the
    runner, which importing it binds.)"""
    from pathlib import Path

    from .config.suite import suite_from
    from .run.runner import run_suite as _run

    s = suite_from(suite)
    out = Path(out) if out is not None else Path("runs") / s.name
    _run(s, out, device=device, limit=limit, quiet=quiet, overwrite=overwrite, registry_files=list(registry))
    return load_results(out)


def make_table(results, format: str = "md") -> str:
    """The leaderboard of results (what ``load_results`` or ``run_suite`` gives, or a folder, or a list of folders) as
    text: "md", "csv" or "html" (the same renderers as ``questbench leaderboard``)."""
    from .report.leaderboard import render
    if format not in ("md", "csv", "html"):
        raise QuestbenchError(f"make_table format must be md, csv or html, not {format!r}")
    if not hasattr(results, "samples"):
        results = load_results(results)
    return render(results, format)


def evaluate(model, suite="default", out=None, preprocessing=None, name: str = "model", device=None,
             limit=None, quiet: bool = True, overwrite: bool = False):
    """Run ``suite`` (a built-in name, a TOML path or a mapping of the same keys) on models and return what
    ``load_results`` gives. ``model``: your own ``nn.Module`` (named ``name``), or registry names / checkpoint
    paths (a string or a list of them). A module takes [0, 1] NCHW images, or pass
    ``preprocessing={"mean": [...], "std": [...], "input_size": (c, h, w)}`` to have them adapted (channels,
    size) and normalized in front of it, as registry models do. It is identified in the results by a hash of its
    state_dict, so a folder is resumed only for the same weights. The suite's own ``models`` list is replaced
    by these; results go to ``out`` (default runs/<name>, or runs/<suite name> for registry models)."""
    import torch.nn as nn

    from .models.build import ExternalModel, QuestbenchModel
    from .run.runner import run_suite as _run
    from .config.suite import suite_from

    if isinstance(model, str) or (isinstance(model, (list, tuple)) and model
                                  and all(isinstance(m, str) for m in model)):
        if preprocessing is not None:
            raise QuestbenchError("preprocessing applies to your own nn.Module; a registry model or checkpoint "
                                  "carries its own")
        names = [model] if isinstance(model, str) else list(model)
        s = suite_from({**suite, "models": names} if isinstance(suite, Mapping) else suite)
        s.models = names
        return run_suite(s, out, device=device, limit=limit, quiet=quiet, overwrite=overwrite)
    if not isinstance(model, nn.Module):
        raise QuestbenchError(f"evaluate takes a torch nn.Module, a registry name or checkpoint path, or a list of "
                              f"those, not {type(model).__name__}")
    if preprocessing is not None and not (isinstance(preprocessing, Mapping)
                                          and set(preprocessing) <= {"mean", "std", "input_size"}):
        raise QuestbenchError("preprocessing is a mapping of 'mean' and 'std' (one value per channel) and "
                              "'input_size' ((channels, height, width) the model needs; inputs are adapted to it)")
    given = model  # the module as the caller handed it: restored as found after the run
    if not isinstance(model, (QuestbenchModel, ExternalModel)):
        model = ExternalModel(model, name, **dict(preprocessing or {}))
    if isinstance(suite, Mapping):
        suite = {"models": [name], **suite}  # the list is replaced below; a mapping need not carry one
    s = suite_from(suite)
    s.models, s.registry = [name], []
    from pathlib import Path

    from ._io import safe_name
    out = out if out is not None else Path("runs") / safe_name(name)  # a name is data, never a path
    with _Preserved(given):
        _run(s, out, device=device, limit=limit, quiet=quiet, overwrite=overwrite, models={name: model})
    return load_results(out)


def attack(model, x, y, attack: str = "pgd", eps: float = 8 / 255, seed: int = 0, **config):
    """One batch: the adversarial images (same shape as ``x``, in [0, 1]) of an attack on a model taking [0, 1]
    images. ``attack``: fgsm, pgd, autoattack, apgd-ce, autoattack-fast (keywords as in suites: norm, steps,
    step_size, restarts, random_start, loss) or patch (eps is then ignored; keywords patches, loss, size, steps,
    step_size, restarts, position, layers)."""
    import torch

    from .evaluators.common import frozen, precision_scope
    from .config.settings import AttackConfig, PatchConfig

    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not isinstance(y, torch.Tensor) or y.shape != x.shape[:1]:
        raise QuestbenchError("attack takes x as an NCHW tensor in [0, 1] and y as N integer labels")
    if len(x) == 0:
        raise QuestbenchError("attack got an empty batch")
    if x.device.type == "meta":
        raise QuestbenchError("attack cannot run on the meta device (tensors without data)")
    if not x.is_floating_point() or not bool(torch.isfinite(x).all()) or float(x.min()) < 0 or float(x.max()) > 1:
        raise QuestbenchError("attack takes float images in [0, 1] (normalization lives inside the model); "
                              "clamping them here would put the result outside the eps ball around the input")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise QuestbenchError(f"attack takes integer labels, not {y.dtype}")
    if x.dtype != torch.float32:  # the attacks' step sizes and budgets are float32 arithmetic, like the model's
        raise QuestbenchError(f"attack takes float32 images, not {x.dtype} (x.float())")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise QuestbenchError(f"attack eps is a number (8/255, not \"8/255\"), not {eps!r}")
    try:
        cfg = PatchConfig(**config) if attack == "patch" else AttackConfig(attack=attack, eps=float(eps), **config)
    except TypeError as exc:
        raise QuestbenchError(f"attack {attack!r}: {exc}") from None
    with _Preserved(model), precision_scope(str(x.device)):
        wrapped = frozen(model, "fp32", str(x.device))
        if attack == "patch":
            from .evaluators.patch import attack_patch_batch
            images: list = []
            attack_patch_batch(wrapped, cfg, x, y, [str(i) for i in range(len(x))], seed, images=images)
            return images[-1][0] if images else x.clone()
        from .evaluators.attacks import attack_batch
        with torch.no_grad():
            probe = wrapped(x[:1])
        if not isinstance(probe, torch.Tensor) or probe.ndim != 2 or not probe.is_floating_point():
            got = type(probe).__name__ if not isinstance(probe, torch.Tensor) else f"{probe.dtype} {tuple(probe.shape)}"
            raise QuestbenchError(f"attack needs a model that returns float logits (N, classes), not {got}")
        num_classes = int(probe.shape[1])
        if int(y.min()) < 0 or int(y.max()) >= num_classes:
            raise QuestbenchError(f"attack labels must be in [0, {num_classes}) for this model's {num_classes} "
                                  f"outputs, not {int(y.min())}..{int(y.max())}")
        x_adv, _ = attack_batch(wrapped, cfg, x, y, seed, num_classes, str(x.device), [])
        return x_adv


def corrupt(x, corruption: str, severity: int = 3, seed: int = 0, mode: str = "native", engine: Optional[str] = None,
            params: Optional[str] = None):
    """One batch (NCHW or CHW float in [0, 1]) through a corruption, as a suite's [corruptions] table with the same
    keys makes it (the same defaults: the torch engine, "auto" constants; ``engine="imagecorruptions"``: the
    reference library), each image seeded from (seed, its index in the batch, corruption, severity). Returns float
    RGB images in [0, 1] at the size the corruption worked at (images under 32 px are upsampled to 32 first, as
    in suites)."""
    import numpy as np
    import torch

    from .evaluators.corruption_reference import corrupted_sample, prepare_image

    if not isinstance(x, torch.Tensor) or x.ndim not in (3, 4):
        raise QuestbenchError("corrupt takes a CHW or NCHW float tensor in [0, 1]")
    if not x.is_floating_point():  # a uint8 batch would be read as 0/1 after the clamp
        raise QuestbenchError(f"corrupt takes float images in [0, 1], not {x.dtype} (divide uint8 images by 255)")
    channels = x.shape[-3]
    if x.numel() == 0 or channels not in (1, 3):
        raise QuestbenchError(f"corrupt takes a non-empty batch of 1- or 3-channel images, not shape "
                              f"{tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()) or float(x.min()) < 0 or float(x.max()) > 1:
        raise QuestbenchError("corrupt takes finite images in [0, 1]; these hold NaN, infinity or values outside "
                              "it (0-255 images: divide by 255)")
    if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= 5:
        raise QuestbenchError(f"corrupt severity is an integer 1..5, not {severity!r}")
    spec = _corruption_spec([corruption], [severity], mode, engine, params)
    batch = x if x.ndim == 4 else x[None]
    arrays = (batch.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    arrays = [a[..., 0] if a.shape[-1] == 1 else a for a in arrays]
    ids = [str(i) for i in range(len(arrays))]
    if spec.engine == "torch":  # as in a suite: the prepared uint8 image, corrupted as a batch on x's device
        from .config.settings import CorruptionSetting
        from .evaluators.corruptions import TorchEngine
        prepared = torch.from_numpy(np.stack([prepare_image(a, mode) for a in arrays])).permute(0, 3, 1, 2)
        result = TorchEngine(seed, spec.params)(prepared.float().div_(255.0).to(x.device),
                                               CorruptionSetting(corruption, severity), ids).clamp_(0, 1)
    else:
        out = [corrupted_sample(a, sid, corruption, severity, seed, mode) for a, sid in zip(arrays, ids)]
        result = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div_(255.0).to(x.device)
    return result if x.ndim == 4 else result[0]


def load_results(path):
    from .store.results import load_results as _load
    return _load(path)


__all__ = ["ATTENTION_KINDS", "QuestbenchError", "attack", "attention_kind", "compare", "compare_kinds", "compare_seeds",
           "corrupt",
           "corruption_sweep",
           "evaluate", "list_models", "load_dataset", "load_model", "load_results", "make_table", "metrics", "record_attention",
           "run_suite", "set_attention",
           "__version__"]
