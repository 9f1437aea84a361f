"""What rebuilds a model's architecture and preprocessing, as plain data (no torch): one pydantic schema, stored
in each checkpoint card and extended by each registry entry (questbench.models.registry)."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ..errors import QuestbenchError

PositiveInt = Annotated[int, Field(gt=0)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class ModelSpec(BaseModel):
    """Everything needed to rebuild a model's architecture and preprocessing (stored in its card)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    arch: Annotated[str, Field(min_length=1)]  # a timm model name, e.g. "vit_tiny_patch16_224"
    attention: str = "standard"
    num_classes: PositiveInt = 1000
    input_size: tuple[PositiveInt, PositiveInt, PositiveInt] = (3, 224, 224)  # (channels, height, width) seen
    mean: Annotated[tuple[Finite, ...], Field(min_length=1)] = (0.485, 0.456, 0.406)
    std: Annotated[tuple[Annotated[Finite, Field(gt=0)], ...], Field(min_length=1)] = (0.229, 0.224, 0.225)
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    arch_kwargs: dict[str, Any] = {}  # overrides: patch_size, embed_dim, depth, ...

    @field_validator("input_size", "mean", "std", mode="before")
    @classmethod
    def _lists_as_tuples(cls, v: Any) -> Any:
        # TOML and JSON give lists; specs hold tuples (hashable, and equal whatever file they came from)
        return tuple(v) if isinstance(v, list) else v

    @model_validator(mode="after")
    def _one_value_per_channel(self) -> "ModelSpec":
        for name in ("mean", "std"):
            if len(getattr(self, name)) not in (1, self.input_size[0]):
                raise PydanticCustomError("questbench", f"{name} has {len(getattr(self, name))} values for "
                                                        f"{self.input_size[0]} channels (one, or one per channel)")
        return self

    @classmethod
    def from_dict(cls, d: Any, where: str = "model spec") -> "ModelSpec":
        """A spec from a card's or the caller's mapping; a bad one is one line naming the field."""
        if not isinstance(d, dict):
            raise QuestbenchError(f"{where}: a table of fields, not {type(d).__name__}")
        try:
            return cls.model_validate(d)
        except ValidationError as exc:
            raise QuestbenchError(f"{where}: {describe(exc)}") from None


def describe(exc: ValidationError) -> str:
    """The first problem of a validation error as '<key>: <what is wrong> (got <value>)'."""
    e = exc.errors()[0]
    key = ".".join(str(p) for p in e["loc"] if not isinstance(p, int))
    msg = "unknown field" if e["type"] == "extra_forbidden" else e["msg"]
    got = "" if e["type"] in ("extra_forbidden", "missing", "questbench") or isinstance(e.get("input"), dict) \
        else f" (got {e.get('input')!r})"
    more = f"; {len(exc.errors()) - 1} more problem(s)" if len(exc.errors()) > 1 else ""
    return f"{key + ': ' if key else ''}{msg}{got}{more}"  # a rule between fields names them in its message
