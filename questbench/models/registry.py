"""Checkpoint registry: named entries in TOML files, resolved to loaded models.

The built-in registry is ``questbench/zoo/registry.toml``. Users add their own entries in TOML files of the
same shape, named by the ``QUESTBENCH_REGISTRY`` environment variable (paths separated by ``os.pathsep``) or
passed as ``registry_files=``. A later file's entry overrides a built-in one of the same name.

``source`` forms: ``builtin:<file>`` (in questbench/zoo), ``path:<file>``, ``url:<https://...>``,
``timm:<pretrained name>`` (timm/HF-hub weights, online only), ``robustbench:<model name>`` (needs a working
robustbench install; optional).
"""
from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from .._io import parse_toml
from ..errors import QuestbenchError
from ..config.modelspec import ModelSpec
from ..config.settings import ATTENTION_NAMES

if TYPE_CHECKING:
    from .build import QuestbenchModel

SOURCE_PATTERN = r"^(builtin|path|url|timm|robustbench):.+$"


class RegistryEntry(ModelSpec):
    """One ``[[model]]`` table: a model spec plus where its weights come from and what it is; strict types,
    unknown keys refused. ``registry_file`` is the file it was read from (relative ``path:`` sources start
    there)."""

    name: Annotated[str, Field(min_length=1)]
    source: Annotated[str, Field(pattern=SOURCE_PATTERN)]
    sha256: Annotated[str, Field(pattern=r"^([0-9a-f]{64})?$")] = ""
    pair: str = ""
    dataset: str = ""
    description: str = ""
    _registry_file: str = PrivateAttr("")

    @field_validator("attention")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        if v not in ATTENTION_NAMES:
            raise ValueError(f"unknown attention kind {v!r}; known: {', '.join(ATTENTION_NAMES)}")
        return v

    @property
    def registry_file(self) -> str:
        return self._registry_file

    @property
    def channels(self) -> int:
        return self.input_size[0]

    def spec(self) -> ModelSpec:
        return ModelSpec.model_validate(self.model_dump(include=set(ModelSpec.model_fields)))

    def as_dict(self) -> dict[str, Any]:
        return {**self.model_dump(), "registry_file": self.registry_file}


class _RegistryFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    model: list[RegistryEntry] = []


def builtin_registry_file() -> Path:
    return Path(str(resources.files("questbench").joinpath("zoo", "registry.toml")))


def _parse(path: Path) -> dict[str, RegistryEntry]:
    try:
        data = parse_toml(path.read_bytes().decode("utf-8"), f"registry file {path}")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise QuestbenchError(f"registry file not found: {path}") from None
    except UnicodeDecodeError:
        raise QuestbenchError(f"registry file {path} is not a UTF-8 text file (TOML expected)") from None
    try:
        schema = _RegistryFile.model_validate(data)
    except ValidationError as exc:
        e = exc.errors()[0]
        loc = list(e["loc"])
        raw = data.get("model", [])
        who = raw[loc[1]].get("name", "?") if len(loc) > 1 and isinstance(loc[1], int) and isinstance(raw, list) \
            and loc[1] < len(raw) and isinstance(raw[loc[1]], dict) else "?"
        key = ".".join(str(p) for p in loc[2:]) or ".".join(str(p) for p in loc)
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        raise QuestbenchError(f"registry file {path}: model {who!r}: {key}: {msg}") from None
    entries = {}
    for e in schema.model:
        if e.name in entries:
            raise QuestbenchError(f"registry file {path}: model {e.name!r} is defined twice")
        e._registry_file = str(path)
        entries[e.name] = e
    return entries


def load_registry(registry_files: Optional[Sequence[str | Path]] = None) -> dict[str, RegistryEntry]:
    files = [builtin_registry_file()]
    env = os.environ.get("QUESTBENCH_REGISTRY", "")
    files += [Path(p) for p in env.split(os.pathsep) if p]
    files += [Path(p) for p in registry_files or []]
    entries: dict[str, RegistryEntry] = {}
    for f in files:
        if f == files[0] and not f.is_file():
            continue
        entries.update(_parse(f))
    return entries


def list_models(registry_files=None, attention: Optional[str] = None) -> list[RegistryEntry]:
    entries = load_registry(registry_files).values()
    return [e for e in entries if attention is None or e.attention == attention]


def get_entry(name: str, registry_files=None) -> RegistryEntry:
    entries = load_registry(registry_files)
    if name not in entries:
        raise QuestbenchError(f"unknown model {name!r}; `questbench models` lists the registry")
    return entries[name]


def _load_timm_pretrained(entry: RegistryEntry, timm_name: str) -> QuestbenchModel:
    import timm

    from huggingface_hub import constants as hub

    from .build import QuestbenchModel

    offline = hub.HF_HUB_OFFLINE or not _hub_reachable(hub.ENDPOINT)
    was, hub.HF_HUB_OFFLINE = hub.HF_HUB_OFFLINE, offline  # offline: the cache answers at once, no retries
    try:
        net = timm.create_model(timm_name, pretrained=True, num_classes=entry.num_classes)
    except Exception as exc:  # hub/network errors have many types
        where = "it is not in the local Hugging Face cache and the hub cannot be reached" if offline else \
            "needs network access or a filled HF cache"
        raise QuestbenchError(f"cannot fetch timm pretrained weights {timm_name!r} ({where}): "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    finally:
        hub.HF_HUB_OFFLINE = was
    from .attention import set_attention
    set_attention(net, entry.attention)
    return QuestbenchModel(net, entry.spec(), {"source": entry.source})


def _hub_reachable(endpoint: str, timeout_s: float = 3.0) -> bool:
    """Whether a connection to the hub opens within ``timeout_s`` (a machine without network then fails in
    seconds instead of after the hub client's ~55 s of retries)."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(endpoint)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=timeout_s).close()
        return True
    except (OSError, ValueError):
        return False


def _load_robustbench(entry: RegistryEntry, rb_name: str) -> QuestbenchModel:
    try:
        from robustbench.utils import load_model as rb_load  # optional; robustbench 1.1.1 needs `autoattack`
    except Exception as exc:
        raise QuestbenchError(f"robustbench is not importable here ({type(exc).__name__}); "
                              f"entry {entry.name!r} needs a working robustbench install") from None
    from .build import QuestbenchModel
    net = rb_load(model_name=rb_name, dataset=entry.dataset or "cifar10", threat_model="Linf")
    # RobustBench models already normalize inside: identity preprocessing
    spec = ModelSpec(arch=entry.arch, attention=entry.attention, num_classes=entry.num_classes,
                     input_size=entry.input_size, mean=(0.0,) * entry.channels, std=(1.0,) * entry.channels)
    return QuestbenchModel(net, spec, {"source": entry.source})


def resolve_entry_file(entry: RegistryEntry) -> Path:
    kind, _, ref = entry.source.partition(":")
    if kind == "builtin":
        return Path(str(resources.files("questbench").joinpath("zoo", ref)))
    if kind == "path":
        p = Path(ref).expanduser()
        return p if p.is_absolute() else Path(entry.registry_file).parent / p
    if kind == "url":
        import torch.hub
        cache = Path(torch.hub.get_dir()) / "questbench" / Path(ref).name
        if not cache.is_file():
            cache.parent.mkdir(parents=True, exist_ok=True)
            try:
                torch.hub.download_url_to_file(ref, str(cache), progress=False)
            except Exception as exc:
                raise QuestbenchError(f"cannot download {ref}: {exc}") from None
        return cache
    raise QuestbenchError(f"model {entry.name!r}: unknown source kind {kind!r}")


def load_model(name_or_path: str, registry_files=None, trust_pickle: bool = False,
               device: str = "cpu", **spec_fields) -> QuestbenchModel:
    """Load by registry name, or by path to a checkpoint with its card (``.json``) beside it. A weight file
    without a card (a timm-format state_dict, e.g. from a Hugging Face cache) loads with the spec given as
    keywords: ``load_model("model.safetensors", arch="deit_tiny_patch16_224", attention="quest")``."""
    from .build import load_checkpoint
    if not isinstance(name_or_path, (str, Path)) or not str(name_or_path):
        raise QuestbenchError(f"a model is a registry name or a checkpoint path, not {name_or_path!r}")
    if not isinstance(device, str) or not re.match(r"^(cpu|cuda(:[0-9]+)?|mps)$", device):
        raise QuestbenchError(f"device must be cpu, cuda[:N] or mps, not {device!r}")
    import torch
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise QuestbenchError(f"device {device!r} requested but CUDA is not available here")
    if device == "mps" and not torch.backends.mps.is_available():
        raise QuestbenchError("device 'mps' requested but Apple's Metal (MPS) is not available here")
    path = Path(name_or_path)
    if path.suffix in (".safetensors", ".pt", ".pth", ".bin") or path.exists():
        spec = ModelSpec.from_dict(spec_fields) if spec_fields else None
        return load_checkpoint(path, trust_pickle=trust_pickle, spec=spec).to(device)
    if spec_fields:
        raise QuestbenchError(f"spec keywords ({', '.join(spec_fields)}) apply to a weight file path, not to "
                              f"registry entry {name_or_path!r}")
    entry = get_entry(name_or_path, registry_files)
    kind, _, ref = entry.source.partition(":")
    if kind == "timm":
        model = _load_timm_pretrained(entry, ref)
    elif kind == "robustbench":
        model = _load_robustbench(entry, ref)
    else:
        model = load_checkpoint(resolve_entry_file(entry), expected_sha256=entry.sha256 or None,
                                trust_pickle=trust_pickle, spec=entry.spec())
    model.card = {**model.card, "name": entry.name, "pair": entry.pair, "registry_entry": entry.as_dict()}
    return model.eval().to(device)
