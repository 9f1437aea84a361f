"""What rebuilds a model's architecture and preprocessing, as plain data (no torch): stored in each card and
registry entry."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import QuestbenchError


@dataclass
class ModelSpec:
    """Everything needed to rebuild a model's architecture and preprocessing (stored in its card)."""

    arch: str  # a timm model name, e.g. "vit_tiny_patch16_224"
    attention: str = "standard"
    num_classes: int = 1000
    input_size: tuple[int, int, int] = (3, 224, 224)  # (channels, height, width) the network sees
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"
    arch_kwargs: dict[str, Any] = field(default_factory=dict)  # overrides: patch_size, embed_dim, depth, ...

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelSpec":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise QuestbenchError(f"unknown model spec fields: {', '.join(sorted(unknown))}")
        try:
            spec = cls(**tuple_fields(d))
        except TypeError as exc:
            raise QuestbenchError(f"model spec: {exc}") from None
        if not isinstance(spec.arch, str) or not isinstance(spec.attention, str) or len(spec.input_size) != 3:
            raise QuestbenchError("model spec: arch and attention must be names, input_size (channels, h, w)")
        return spec


def tuple_fields(d: dict[str, Any]) -> dict[str, Any]:
    """TOML/JSON give lists; specs hold tuples (hashable, and equal whatever file they came from)."""
    return {k: tuple(v) if k in ("input_size", "mean", "std") else v for k, v in d.items()}
