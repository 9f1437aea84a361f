"""questbench: is a ViT with QUEST attention more robust than the same ViT with standard attention?"""
from __future__ import annotations

from collections.abc import Mapping

from .attention import ATTENTION_KINDS, attention_kind, record_attention, set_attention
from .errors import QuestbenchError
from . import timm_models  # noqa: F401  (registers vit_*_quest & co. with timm)

__version__ = "0.1.0"


def load_model(name_or_path: str, **kwargs):
    """An eval-mode model taking [0, 1] NCHW images, from a registry name or a checkpoint path."""
    from .registry import load_model as _load
    return _load(name_or_path, **kwargs)


def list_models(**kwargs):
    from .registry import list_models as _list
    return _list(**kwargs)


def load_dataset(name: str, split: str = "test", **kwargs):
    from .data import load_dataset as _load
    return _load(name, split, **kwargs)


def corruption_sweep(models, dataset, corruptions="common", severities=(1, 2, 3, 4, 5), seed: int = 0,
                     mode: str = "native", **kwargs) -> dict:
    """Error per model, corruption and severity, {model: {corruption: [fraction at each severity]}}, generated on
    the fly. ``models``: registry names / checkpoint paths, or a mapping name -> model; ``corruptions``: "common"
    (the 15 of mCE), "all" (with the 4 extras) or a list of names. Keyword arguments: batch_size, num_workers,
    device, quiet."""
    from .evaluators.corruptions import corruption_errors
    from .metrics import ALL_CORRUPTIONS, COMMON_CORRUPTIONS

    if isinstance(models, str):
        models = [models]
    if not isinstance(models, Mapping):
        models = {name: load_model(name) for name in models}
    if isinstance(corruptions, str):
        if corruptions not in ("common", "all"):
            raise QuestbenchError(f"corruptions must be 'common', 'all' or a list of names, not {corruptions!r}")
        corruptions = COMMON_CORRUPTIONS if corruptions == "common" else ALL_CORRUPTIONS
    return corruption_errors(models, dataset, list(corruptions), severities, seed, mode, **kwargs)


def compare(results_or_dir, baseline: str, model: str, seed: int = 0):
    """``model`` minus ``baseline`` on shared samples as a DataFrame: evaluation, setting, n_images, baseline_acc,
    model_acc, delta_pp, ci_low, ci_high, p_value, p_holm (one row per setting, one per aggregate 'all')."""
    from .report.compare import compare as _compare
    return _compare(results_or_dir, baseline, model, seed=seed)


def load_results(path):
    from .results import load_results as _load
    return _load(path)


__all__ = ["ATTENTION_KINDS", "QuestbenchError", "attention_kind", "compare", "corruption_sweep", "list_models", "load_dataset",
           "load_model", "load_results", "record_attention", "set_attention", "__version__"]
