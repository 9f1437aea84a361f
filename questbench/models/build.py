"""Build ViTs with a chosen attention kind, wrap preprocessing so inputs are [0, 1], save and load checkpoints.

A questbench model takes float images in [0, 1], NCHW, of any size and 1 or 3 channels: resizing, channel
adaptation and mean/std normalization happen inside the model (as in RobustBench), so attacks work in
pixel space and an epsilon means what users think it means.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import attention_class, set_attention
from .._io import atomic_write_bytes, file_sha256
from ..errors import QuestbenchError
from ..config.modelspec import ModelSpec

CARD_SUFFIX = ".json"


class Preprocess(nn.Module):
    """[0, 1] images of any size/channels -> the network's input size, channels and normalization."""

    def __init__(self, input_size: tuple[int, int, int], mean, std, interpolation: str = "bilinear"):
        super().__init__()
        self.input_size = tuple(input_size)
        self.interpolation = interpolation
        c = input_size[0]
        if len(mean) != c or len(std) != c:
            raise QuestbenchError(f"mean/std need {c} values for {c}-channel input")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, c, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, c, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_size is None:  # normalization only
            return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        c, h, w = self.input_size
        if x.shape[1] != c:
            if c == 1 and x.shape[1] == 3:  # ITU-R 601 luma, the same weights PIL uses for "L"
                x = (x * x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
            elif c == 3 and x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            else:
                raise QuestbenchError(f"model expects {c} channels, got {x.shape[1]}")
        if x.shape[-2:] != (h, w):
            x = F.interpolate(x, size=(h, w), mode=self.interpolation, align_corners=False,
                              antialias=self.interpolation in ("bilinear", "bicubic"))
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class QuestbenchModel(nn.Module):
    """A network plus its preprocessing; ``forward`` takes [0, 1] NCHW images and returns logits."""

    def __init__(self, net: nn.Module, spec: ModelSpec, card: Optional[dict[str, Any]] = None):
        super().__init__()
        self.preprocess = Preprocess(spec.input_size, spec.mean, spec.std, spec.interpolation)
        self.net = net
        self.spec = spec
        self.card = dict(card or {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(x))


class ExternalModel(nn.Module):
    """A user's own ``nn.Module`` made to look like a registry model: optional preprocessing in front (mean/std
    normalization; with ``input_size`` = (channels, height, width) also the channel and size adaptation of
    registry models), a spec naming its class and attention kind, a card without a file hash (the runner
    identifies it by a hash of its state_dict)."""

    def __init__(self, net: nn.Module, name: str, mean=None, std=None, input_size=None):
        super().__init__()
        if (mean is None) != (std is None):
            raise QuestbenchError("preprocessing needs both mean and std (or neither: inputs already in [0, 1])")
        if input_size is not None:
            if len(tuple(input_size)) != 3 or not all(isinstance(v, int) and v > 0 for v in input_size):
                raise QuestbenchError(f"preprocessing input_size is (channels, height, width), not {input_size!r}")
            c = input_size[0]
            self.pre: nn.Module = Preprocess(tuple(input_size), mean or (0.0,) * c, std or (1.0,) * c)
        elif mean is not None:
            self.pre = Preprocess((len(mean), 0, 0), mean, std)
            self.pre.input_size = None  # normalization only: no channel or size change
        else:
            self.pre = nn.Identity()
        self.net = net
        try:
            from .attention import attention_kind
            kind = attention_kind(net)
        except QuestbenchError:  # no timm attention inside (or mixed kinds)
            kind = "unknown"
        # a description of a module built elsewhere, not a spec to rebuild it from: its class count and input
        # size may be unknown (0), which a spec refuses, so it is recorded without validation
        self.spec = ModelSpec.model_construct(arch=type(net).__name__, attention=kind, num_classes=0,
                                              input_size=tuple(input_size or (0, 0, 0)), mean=tuple(mean or ()),
                                              std=tuple(std or ()))
        self.card = {"name": name, "pair": "", "source": "python object"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.pre(x))


def build_model(spec: ModelSpec) -> QuestbenchModel:
    """Build a randomly initialized model from a spec."""
    import timm

    attention_class(spec.attention)  # validate before building
    c, h, w = spec.input_size
    kwargs = dict(num_classes=spec.num_classes, in_chans=c, **spec.arch_kwargs)
    if h != 224 or w != 224 or "img_size" not in spec.arch_kwargs:
        kwargs.setdefault("img_size", (h, w) if h != w else h)
    try:
        net = timm.create_model(spec.arch, pretrained=False, **kwargs)
    except RuntimeError as exc:  # timm raises RuntimeError for unknown model names
        raise QuestbenchError(f"cannot build arch {spec.arch!r}: {exc}") from None
    except (TypeError, ValueError, ZeroDivisionError, AssertionError) as exc:
        # a key the architecture does not take, or a value it cannot build with (num_heads = 0, a patch size
        # that does not divide the image): timm's own check, whatever type it raises
        raise QuestbenchError(f"cannot build arch {spec.arch!r} with arch_kwargs {spec.arch_kwargs}: "
                              f"{str(exc) or type(exc).__name__}") from None
    set_attention(net, spec.attention)
    return QuestbenchModel(net, spec)


def card_path(weights_path: str | Path) -> Path:
    p = Path(weights_path)
    return p.with_name(p.name.rsplit(".", 1)[0] + CARD_SUFFIX)


def save_checkpoint(model: QuestbenchModel, path: str | Path, card: Optional[dict[str, Any]] = None,
                    dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """Write ``path`` (safetensors) and its card (``.json`` beside it); returns the card with the sha256."""
    from safetensors.torch import save

    path = Path(path)
    tensors = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
               for k, v in model.net.state_dict().items()}
    blob = save(tensors, metadata={"format": "pt", "questbench_spec": json.dumps(model.spec.model_dump())})
    atomic_write_bytes(path, blob)
    full = {**model.card, **(card or {}), "spec": model.spec.model_dump(), "weights": path.name,
            "sha256": hashlib.sha256(blob).hexdigest(), "dtype": str(dtype).replace("torch.", "")}
    atomic_write_bytes(card_path(path), (json.dumps(full, indent=2, sort_keys=True) + "\n").encode())
    return full


def read_card(path: str | Path) -> dict[str, Any]:
    cp = card_path(path)
    if not cp.is_file():
        raise QuestbenchError(f"no model card {cp} beside {path} (it records arch, attention and preprocessing)")
    try:
        card = json.loads(cp.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise QuestbenchError(f"model card {cp} is not valid JSON: {exc}") from None
    if not isinstance(card, dict):
        raise QuestbenchError(f"model card {cp} is not a JSON object")
    return card


def _read_state_dict(path: Path, trust_pickle: bool) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise QuestbenchError(f"cannot read safetensors file {path}: {exc}") from None
    import warnings
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols before it fails: one line only
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        hint = "" if trust_pickle else " (pickles load with weights_only=True; pass trust_pickle only for files you trust)"
        first = (str(exc).splitlines() or [type(exc).__name__])[0].split(". ")[0]
        raise QuestbenchError(f"cannot load checkpoint {path}: {first}{hint}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise QuestbenchError(f"{path} does not hold a state_dict")
    bad = next((k for k, v in obj.items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise QuestbenchError(f"{path} does not hold a state_dict: entry {str(bad)[:80]!r} is a "
                              f"{type(obj[bad]).__name__}, not a tensor")
    return obj


def load_checkpoint(path: str | Path, expected_sha256: Optional[str] = None, trust_pickle: bool = False,
                    spec: Optional[ModelSpec] = None) -> QuestbenchModel:
    """Load a checkpoint file (safetensors, or a pickle with weights_only) described by its card."""
    path = Path(path)
    if not path.is_file():
        raise QuestbenchError(f"checkpoint not found: {path}")
    card = read_card(path) if spec is None or card_path(path).is_file() else {}
    expected = expected_sha256 or card.get("sha256")
    actual = file_sha256(path)
    if expected and expected != actual:
        raise QuestbenchError(f"sha256 mismatch for {path}: expected {expected[:12]}..., file has {actual[:12]}...")
    if spec is None:
        if not isinstance(card.get("spec"), dict):
            raise QuestbenchError(f"model card {card_path(path)} has no 'spec' table (arch, attention, "
                                  "preprocessing): it was not written by questbench's save_checkpoint")
        spec = ModelSpec.from_dict(card["spec"])
    model = build_model(spec)
    state = _read_state_dict(path, trust_pickle)
    try:
        model.net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as exc:
        own = model.net.state_dict()
        shape = next((f"{k} is {tuple(v.shape)} in the file, {tuple(own[k].shape)} in the model" for k, v in
                      state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)), None)
        missing = sorted(set(own) - set(state))[:3]
        detail = shape or (f"missing {', '.join(missing)}" if missing else str(exc).splitlines()[0])
        hint = " (num_classes in the card?)" if shape and shape.startswith("head.") else ""
        raise QuestbenchError(f"{path} does not match arch {spec.arch} / {spec.attention}: {detail}{hint}") from None
    model.card = {**card, "sha256": actual, "path": str(path)}
    return model.eval()
