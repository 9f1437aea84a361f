"""ImageNet-C style corruption sweeps: on the fly (the reference path, ``corruption_reference``, in DataLoader
workers, or the batched torch engine on the models' device) or from the released datasets (ImageNet-C, CIFAR-C),
all through the same grid (``corruption_grid``)."""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from ..config.settings import CorruptionSetting, check_corruption
from ..errors import QuestbenchError
from .corruption_grid import CorruptionGrid, OnTheFly, evaluate_grid
from .corruption_reference import corruption_seed


class TorchEngine:
    """Corrupts a model batch of prepared images (float NCHW in [0, 1], one setting) on its device with
    questbench.evaluators.torch_corruptions; each image's generator is seeded as imagecorruptions' seed is."""

    def __init__(self, suite_seed: int, params: str = "auto"):
        self.suite_seed = suite_seed
        self.params = params

    def __call__(self, x: torch.Tensor, setting: CorruptionSetting, sample_ids: Sequence[str]) -> torch.Tensor:
        from .torch_corruptions import corrupt_batch, generators, resolve_params

        seeds = [corruption_seed(self.suite_seed, sid, setting.corruption, setting.severity) for sid in sample_ids]
        params = resolve_params(self.params, min(x.shape[-2:]))
        return corrupt_batch(x.contiguous(), setting.corruption, setting.severity, generators(seeds, x.device), params)


def seen_images(dataset, indices: Sequence[int], setting: CorruptionSetting, suite_seed: int, mode: str = "native",
                engine: str = "imagecorruptions", params: str = "imagenet-c") -> list[np.ndarray]:
    """The corrupted images (uint8 HxWx3) the models were shown for these samples of an on-the-fly sweep: each
    image is a pure function of the seed, the sample and the setting, made by the same code as in the sweep."""
    if engine == "torch":
        prepared = np.stack([OnTheFly(dataset, suite_seed, mode, corrupt=False)(setting, i) for i in indices])
        x = torch.from_numpy(prepared).permute(0, 3, 1, 2).float().div_(255.0)
        y = TorchEngine(suite_seed, params)(x, setting, [dataset.sample_ids[i] for i in indices])
        # the model saw y as floats; shown as the nearest uint8 image
        return list((y.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    source = OnTheFly(dataset, suite_seed, mode)
    return [source(setting, i) for i in indices]


def evaluate_corruptions(models: Mapping[str, torch.nn.Module], dataset, settings: Sequence[CorruptionSetting],
                         suite_seed: int = 0, mode: str = "native", engine: str = "imagecorruptions",
                         params: str = "imagenet-c", **kwargs):
    """On-the-fly corruption sweep of ``dataset`` (anything with image_uint8, sample_ids, labels), by
    imagecorruptions in DataLoader workers or by the batched torch engine on the models' device."""
    for st in settings:
        check_corruption(st.corruption, st.severity)
    if engine not in ("imagecorruptions", "torch"):
        raise QuestbenchError(f"corruption engine must be imagecorruptions or torch, not {engine!r}")
    if engine == "torch" and mode != "native":
        raise QuestbenchError("the torch corruption engine runs in mode \"native\" only")
    torch_engine = TorchEngine(suite_seed, params) if engine == "torch" else None
    grid = CorruptionGrid(settings, len(dataset), dataset.labels,
                          OnTheFly(dataset, suite_seed, mode, corrupt=torch_engine is None))
    return evaluate_grid(models, grid, dataset.sample_ids, engine=torch_engine, **kwargs)


def corruption_errors(models: Mapping[str, torch.nn.Module], dataset, corruptions: Sequence[str],
                      severities: Sequence[int] = (1, 2, 3, 4, 5), suite_seed: int = 0, mode: str = "native",
                      quiet: bool = False, **kwargs) -> dict[str, dict[str, list[float]]]:
    """On-the-fly sweep reduced to {model: {corruption: [error at each severity]}} (fractions), the mapping
    questbench.stats.metrics.mce and mean_corruption_error take. Shows a progress bar unless quiet."""
    from ..progress import progress_bar

    settings = [CorruptionSetting(c, s) for c in corruptions for s in severities]
    for st in settings:
        check_corruption(st.corruption, st.severity)
    errors = {name: {c: [0.0] * len(severities) for c in corruptions} for name in models}
    with progress_bar(quiet) as bar:
        task = bar.add_task("corruptions", total=len(settings) * len(dataset) * len(models))
        sweep = evaluate_corruptions(models, dataset, settings, suite_seed, mode,
                                     on_batch=lambda n: bar.advance(task, n * len(models)), **kwargs)
        for st, name, records in sweep:
            errors[name][st.corruption][list(severities).index(st.severity)] = (
                1.0 - sum(r["correct"] for r in records) / len(records))
    return errors


def evaluate_released(models: Mapping[str, torch.nn.Module], source: Callable, labels: Sequence[int],
                      sample_ids: Sequence[str], settings: Sequence[CorruptionSetting], **kwargs):
    """Sweep over a released corrupted dataset (ImageNet-C tree or CIFAR-C arrays) through a grid source."""
    grid = CorruptionGrid(settings, len(sample_ids), labels, source)
    return evaluate_grid(models, grid, sample_ids, **kwargs)
