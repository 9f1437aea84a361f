"""What rebuilds a model's architecture and preprocessing, as plain data (no torch): stored in each card and
registry entry."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import QuestbenchError


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
        if isinstance(d.get("input_size"), str) or isinstance(d.get("mean"), str) or isinstance(d.get("std"), str):
            raise QuestbenchError("model spec: input_size, mean and std are lists of numbers, not strings")
        try:
            spec = cls(**tuple_fields(d))
        except TypeError as exc:
            raise QuestbenchError(f"model spec: {exc}") from None
        if not isinstance(spec.arch, str) or not isinstance(spec.attention, str) or len(spec.input_size) != 3:
            raise QuestbenchError("model spec: arch and attention must be names, input_size (channels, h, w)")
        spec.check()
        return spec

    def check(self) -> None:
        """Types and ranges a card or registry file can get wrong, as one line each (not a TypeError later)."""
        def positive_int(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v > 0

        def number(v) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")

        if not positive_int(self.num_classes):
            raise QuestbenchError(f"model spec: num_classes must be a positive integer, not {self.num_classes!r}")
        if not (isinstance(self.input_size, tuple) and len(self.input_size) == 3
                and all(positive_int(v) for v in self.input_size)):
            raise QuestbenchError(f"model spec: input_size must be three positive integers (channels, height, "
                                  f"width), not {self.input_size!r}")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if not (isinstance(values, tuple) and len(values) in (1, self.input_size[0])
                    and all(number(v) for v in values)):
                raise QuestbenchError(f"model spec: {name} must be one finite number per channel, not {values!r}")
        if any(v <= 0 for v in self.std):
            raise QuestbenchError(f"model spec: std must be positive, not {self.std!r}")
        if not isinstance(self.arch_kwargs, dict):
            raise QuestbenchError(f"model spec: arch_kwargs must be a table, not {self.arch_kwargs!r}")


def tuple_fields(d: dict[str, Any]) -> dict[str, Any]:
    """TOML/JSON give lists; specs hold tuples (hashable, and equal whatever file they came from)."""
    return {k: tuple(v) if k in ("input_size", "mean", "std") else v for k, v in d.items()}
