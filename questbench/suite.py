"""Suite files (TOML) -> validated, fully resolved suites -> jobs (model x evaluation x setting).

Everything is checked before anything runs: an unknown key, model, corruption, attack or a missing dataset
is one QuestbenchError naming it.
"""
from __future__ import annotations

import hashlib
import tomllib
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any, Optional

from .errors import QuestbenchError
from .evaluators.attacks import ATTACKS, AttackConfig
from .evaluators.corruptions import MODES as CORRUPTION_MODES, CorruptionSetting, check_corruption
from .metrics import ALL_CORRUPTIONS, COMMON_CORRUPTIONS, EXTRA_CORRUPTIONS

CORRUPTION_SOURCES = CORRUPTION_MODES + ("imagenet-c", "cifar-c")
_TOP_KEYS = {"name", "description", "seed", "device", "batch_size", "num_workers", "precision", "models", "data",
             "clean", "corruptions", "attacks", "diagnostics", "registry"}
_DATA_KEYS = {"dataset", "split", "root", "samples", "classes"}
_CORR_KEYS = {"names", "severities", "mode", "root", "samples"}
_ATTACK_KEYS = {"attack", "eps", "norm", "steps", "step_size", "step_size_ratio", "restarts", "random_start",
                "loss", "samples", "batch_size"}
_DIAG_KEYS = {"samples"}


def _check_keys(table: dict, allowed: set, where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise QuestbenchError(f"suite {where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def parse_eps(value: Any, where: str) -> float:
    """Accept numbers and fraction strings such as "1/255"."""
    try:
        if isinstance(value, str):
            return float(Fraction(value.strip()))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    except (ValueError, ZeroDivisionError):
        pass
    raise QuestbenchError(f"suite {where}: eps {value!r} is not a number or a fraction like \"1/255\"")


@dataclass
class DataSpec:
    dataset: str = "fashion-mnist"
    split: str = "test"
    root: Optional[str] = None
    samples: Optional[int] = None
    classes: Optional[str] = None  # ImageNet: a file of wnids (one per line) fixing class order


@dataclass
class CorruptionSpec:
    names: list[str]
    severities: list[int]
    mode: str = "native"  # native | faithful (on the fly) | imagenet-c | cifar-c (released, from disk)
    root: Optional[str] = None
    samples: Optional[int] = None

    def settings(self) -> list[CorruptionSetting]:
        return [CorruptionSetting(c, s) for c in self.names for s in self.severities]


@dataclass
class AttackSpec:
    configs: list[AttackConfig]
    samples: Optional[int] = None
    batch_size: Optional[int] = None


@dataclass
class Suite:
    name: str
    description: str
    models: list[str]
    data: DataSpec
    seed: int = 0
    device: str = "auto"
    batch_size: int = 256
    num_workers: int = 2
    precision: str = "fp32"
    clean: bool = True
    corruptions: Optional[CorruptionSpec] = None
    attacks: list[AttackSpec] = field(default_factory=list)
    diagnostics_samples: Optional[int] = None
    path: str = ""
    sha256: str = ""
    registry: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["attacks"] = [{"samples": a.samples, "configs": [c.resolved() for c in a.configs]} for a in self.attacks]
        return d


def _corruption_names(value: Any) -> list[str]:
    if value in (None, "common"):
        return list(COMMON_CORRUPTIONS)
    if value == "extra":
        return list(EXTRA_CORRUPTIONS)
    if value == "all":
        return list(ALL_CORRUPTIONS)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise QuestbenchError(f"suite corruptions.names must be a list or common/extra/all, not {value!r}")
    return [str(v) for v in value]


def _positive_int(value: Any, where: str) -> Optional[int]:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise QuestbenchError(f"suite {where} must be a positive integer, not {value!r}")
    return value


def _parse_attacks(entries: Any) -> list[AttackSpec]:
    if not isinstance(entries, list):
        raise QuestbenchError("suite attacks must be an array of tables ([[attacks]])")
    specs = []
    for n, a in enumerate(entries):
        where = f"attacks[{n}]"
        _check_keys(a, _ATTACK_KEYS, where)
        if a.get("attack") not in ATTACKS:
            raise QuestbenchError(f"suite {where}: unknown attack {a.get('attack')!r}; known: {', '.join(ATTACKS)}")
        eps_values = a.get("eps", [])
        eps_list = [parse_eps(e, where) for e in (eps_values if isinstance(eps_values, list) else [eps_values])]
        if not eps_list:
            raise QuestbenchError(f"suite {where}: give eps (a number or a list for a sweep)")
        configs = []
        for eps in eps_list:
            step_size = a.get("step_size")
            if step_size is not None:
                step_size = parse_eps(step_size, where)
            elif "step_size_ratio" in a:
                step_size = float(a["step_size_ratio"]) * eps
            configs.append(AttackConfig(attack=a["attack"], eps=eps, norm=a.get("norm", "Linf"),
                                        steps=int(a.get("steps", 10 if a["attack"] == "pgd" else 0)),
                                        step_size=step_size, restarts=int(a.get("restarts", 1)),
                                        random_start=bool(a.get("random_start", True)), loss=a.get("loss", "ce")))
        specs.append(AttackSpec(configs, _positive_int(a.get("samples"), f"{where}.samples"),
                                _positive_int(a.get("batch_size"), f"{where}.batch_size")))
    return specs


def parse_suite(text: str, path: str = "<string>") -> Suite:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise QuestbenchError(f"suite {path} is not valid TOML: {exc}") from None
    _check_keys(raw, _TOP_KEYS, "top level")
    models = raw.get("models")
    if not models or not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise QuestbenchError(f"suite {path}: 'models' must be a non-empty list of registry names or paths")
    data_raw = raw.get("data", {})
    _check_keys(data_raw, _DATA_KEYS, "[data]")
    data = DataSpec(**data_raw)
    _positive_int(data.samples, "data.samples")
    corruptions = None
    if "corruptions" in raw:
        c = raw["corruptions"]
        _check_keys(c, _CORR_KEYS, "[corruptions]")
        corruptions = CorruptionSpec(names=_corruption_names(c.get("names")),
                                     severities=list(c.get("severities", [1, 2, 3, 4, 5])),
                                     mode=c.get("mode", "native"), root=c.get("root"),
                                     samples=_positive_int(c.get("samples"), "corruptions.samples"))
        if corruptions.mode not in CORRUPTION_SOURCES:
            raise QuestbenchError(f"suite [corruptions]: mode must be one of {', '.join(CORRUPTION_SOURCES)}, "
                                  f"not {corruptions.mode!r}")
        if corruptions.mode in ("imagenet-c", "cifar-c") and not corruptions.root:
            raise QuestbenchError(f"suite [corruptions]: mode {corruptions.mode!r} needs root = <folder>")
        for name in corruptions.names:
            for sev in corruptions.severities:
                check_corruption(name, sev)
    diag = raw.get("diagnostics")
    if diag is not None:
        _check_keys(diag, _DIAG_KEYS, "[diagnostics]")
    clean = raw.get("clean", {"enabled": True})
    suite = Suite(
        name=raw.get("name", Path(path).stem), description=raw.get("description", ""), models=list(models),
        data=data, seed=int(raw.get("seed", 0)), device=raw.get("device", "auto"),
        batch_size=_positive_int(raw.get("batch_size", 256), "batch_size"),
        num_workers=int(raw.get("num_workers", 2)), precision=raw.get("precision", "fp32"),
        clean=bool(clean.get("enabled", True)) if isinstance(clean, dict) else bool(clean),
        corruptions=corruptions, attacks=_parse_attacks(raw.get("attacks", [])),
        diagnostics_samples=_positive_int((diag or {}).get("samples", 64), "diagnostics.samples") if diag is not None
        else None,
        path=path, sha256=hashlib.sha256(text.encode()).hexdigest(), registry=list(raw.get("registry", [])))
    if suite.precision not in ("fp32", "bf16"):
        raise QuestbenchError(f"suite precision must be fp32 or bf16, not {suite.precision!r}")
    return suite


def builtin_suites_dir() -> Path:
    return Path(str(resources.files("questbench").joinpath("suites")))


def list_suites() -> list[tuple[str, str]]:
    out = []
    for f in sorted(builtin_suites_dir().glob("*.toml")):
        raw = tomllib.loads(f.read_text())
        out.append((f.stem, raw.get("description", "")))
    return out


def load_suite(name_or_path: Optional[str] = None) -> Suite:
    """A suite by built-in name (``default``, ``fmnist-full``, ...) or by path to a TOML file."""
    name_or_path = name_or_path or "default"
    p = Path(name_or_path)
    if not p.is_file():
        builtin = builtin_suites_dir() / f"{name_or_path}.toml"
        if not builtin.is_file():
            known = ", ".join(n for n, _ in list_suites())
            raise QuestbenchError(f"no suite file {name_or_path!r} and no built-in suite of that name (built in: {known})")
        p = builtin
    return parse_suite(p.read_text(), str(p))
