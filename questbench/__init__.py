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

from . import metrics  # noqa: F401  (light: numpy)
from .errors import QuestbenchError

__version__ = "0.1.0"

_LAZY = {"ATTENTION_KINDS": "attention", "attention_kind": "attention", "record_attention": "attention",
         "set_attention": "attention"}


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
        attention = sys.modules.get(f"{__name__}.attention")
        if attention is not None and not hasattr(attention, "ATTENTION_KINDS"):
            return  # questbench.attention is importing timm; it registers the names once it is complete
        importlib.import_module(".timm_models", __name__)


if "timm" in sys.modules:
    from . import timm_models  # noqa: F401
elif not any(isinstance(f, _RegisterWithTimm) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWithTimm())


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


__all__ = ["ATTENTION_KINDS", "QuestbenchError", "attention_kind", "compare", "corruption_sweep", "list_models",
           "load_dataset", "load_model", "load_results", "metrics", "record_attention", "set_attention",
           "__version__"]
