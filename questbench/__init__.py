"""questbench: is a ViT with QUEST attention more robust than the same ViT with standard attention?"""
from __future__ import annotations

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


def load_results(path):
    from .results import load_results as _load
    return _load(path)


__all__ = ["ATTENTION_KINDS", "QuestbenchError", "attention_kind", "list_models", "load_dataset", "load_model",
           "load_results", "record_attention", "set_attention", "__version__"]
