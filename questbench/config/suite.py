"""Suite files (TOML) -> validated, fully resolved suites.

A suite file is validated by a schema (pydantic, strict types, unknown keys forbidden): every mistake is one
QuestbenchError naming the key and what it should be, raised before anything runs.
"""
from __future__ import annotations

import hashlib
import math
import re
import tomllib
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import QuestbenchError
from .corruptions import ALL_CORRUPTIONS, COMMON_CORRUPTIONS, EXTRA_CORRUPTIONS
from .settings import ATTACKS, SHIFT_DATASETS, AttackConfig, CorruptionSetting, PatchConfig, check_corruption

CORRUPTION_SOURCES = ("native", "faithful", "imagenet-c", "cifar-c")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"  # a suite name becomes a folder name under runs/
DEVICE_PATTERN = r"^(auto|cpu|cuda(:[0-9]+)?)$"

PositiveInt = Annotated[int, Field(gt=0)]
Fractionish = Union[int, float, str]  # 0.03, 8/255 as "8/255"


def parse_eps(value: Any, where: str) -> float:
    """A number or a fraction string such as "1/255", in [0, 1] (images live in [0, 1]; 0 anchors a sweep)."""
    eps = None
    try:
        if isinstance(value, str):
            eps = float(Fraction(value.strip()))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            eps = float(value)
    except (ValueError, ZeroDivisionError, OverflowError):
        pass
    if eps is not None and not math.isfinite(eps):
        eps = None
    where = where if where.startswith("--") else f"suite {where}"  # a command-line option, else a suite key
    if eps is None:
        raise QuestbenchError(f"{where}: eps {value!r} is not a number or a fraction like \"1/255\"")
    if not 0 <= eps <= 1:
        raise QuestbenchError(f"{where}: eps {value!r} is outside [0, 1] (images are in [0, 1]; "
                              "write 8/255 as \"8/255\")")
    return eps


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class DataSchema(_Schema):
    dataset: str = "fashion-mnist"
    split: str = "test"
    root: Optional[str] = None
    samples: Optional[PositiveInt] = None
    classes: Optional[str] = None  # image folders: a file of wnids, one per line, fixing the class order


class CorruptionSchema(_Schema):
    names: Union[Literal["common", "extra", "all"], Annotated[list[str], Field(min_length=1)]] = "common"
    severities: Annotated[list[Annotated[int, Field(ge=1, le=5)]], Field(min_length=1)] = [1, 2, 3, 4, 5]
    mode: Literal["native", "faithful", "imagenet-c", "cifar-c"] = "native"
    root: Optional[str] = None
    samples: Optional[PositiveInt] = None
    engine: Literal["imagecorruptions", "torch"] = "imagecorruptions"
    params: Optional[Literal["imagenet-c", "cifar-c", "auto"]] = None


class AttackSchema(_Schema):
    attack: Literal[ATTACKS + ("patch",)]  # type: ignore[valid-type]
    eps: Optional[Union[Fractionish, Annotated[list[Fractionish], Field(min_length=1)]]] = None
    patches: Optional[Union[Annotated[int, Field(ge=0)], Annotated[list[Annotated[int, Field(ge=0)]],
                                                                  Field(min_length=1)]]] = None
    patch_size: Optional[PositiveInt] = None
    position: Optional[Literal["random", "fixed", "worst"]] = None
    layers: Optional[Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]] = None
    halve_every: Optional[Annotated[int, Field(ge=0)]] = None  # patch: halve the step every n steps (0: fixed)
    norm: Literal["Linf", "L2"] = "Linf"
    steps: Optional[PositiveInt] = None
    step_size: Optional[Fractionish] = None
    step_size_ratio: Optional[Annotated[float, Field(gt=0)]] = None
    restarts: PositiveInt = 1
    random_start: bool = True
    loss: Literal["ce", "dlr", "attention"] = "ce"
    samples: Optional[PositiveInt] = None
    batch_size: Optional[PositiveInt] = None


class ShiftSchema(_Schema):
    root: str
    labels: Optional[str] = None  # ImageNet-ReaL: real.json (default: the copy timm ships)
    samples: Optional[PositiveInt] = None


class ChecksSchema(_Schema):
    """Extra attacks that say whether the suite's attack results can be trusted (Carlini et al. 2019): PGD with
    more steps and restarts, a large budget, and a transfer attack from each model's pair partner."""
    samples: PositiveInt = 100
    eps: Fractionish = "8/255"
    steps: PositiveInt = 10
    long_steps: PositiveInt = 50
    long_restarts: PositiveInt = 3
    large_eps: Fractionish = "64/255"
    transfer: bool = True


class DiagnosticsSchema(_Schema):
    samples: PositiveInt = 64


class CleanSchema(_Schema):
    enabled: bool = True


class SuiteSchema(_Schema):
    name: Optional[Annotated[str, Field(pattern=NAME_PATTERN)]] = None
    description: str = ""
    models: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0
    device: Annotated[str, Field(pattern=DEVICE_PATTERN)] = "auto"
    batch_size: PositiveInt = 256
    num_workers: Annotated[int, Field(ge=0, le=256)] = 2
    precision: Literal["fp32", "bf16"] = "fp32"
    data: DataSchema = DataSchema()
    clean: Union[bool, CleanSchema] = True
    corruptions: Optional[CorruptionSchema] = None
    attacks: list[AttackSchema] = []
    diagnostics: Optional[DiagnosticsSchema] = None
    checks: Optional[ChecksSchema] = None
    shifts: dict[str, Union[str, ShiftSchema]] = {}
    registry: list[str] = []

    @field_validator("models")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        dup = sorted({m for m in v if v.count(m) > 1})
        if dup:
            raise ValueError(f"model(s) listed twice: {', '.join(dup)}")
        return v


@dataclass
class DataSpec:
    dataset: str = "fashion-mnist"
    split: str = "test"
    root: Optional[str] = None
    samples: Optional[int] = None
    classes: Optional[str] = None

    def loader_kwargs(self) -> dict[str, Any]:
        """Extra arguments for the dataset loader: the class order file of an image folder."""
        if self.classes is None:
            return {}
        path = Path(self.classes)
        if not path.is_file():
            raise QuestbenchError(f"suite data.classes: no file {path}")
        try:
            wnids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        except UnicodeDecodeError:
            raise QuestbenchError(f"suite data.classes: {path} is not a text file of class names") from None
        if not wnids:
            raise QuestbenchError(f"suite data.classes: {path} lists no classes")
        return {"classes": wnids}


@dataclass
class CorruptionSpec:
    names: list[str]
    severities: list[int]
    mode: str = "native"  # native | faithful (on the fly) | imagenet-c | cifar-c (released, from disk)
    root: Optional[str] = None
    samples: Optional[int] = None
    engine: str = "imagecorruptions"  # on the fly: imagecorruptions (the reference) or torch (batched)
    params: str = "imagenet-c"  # the torch engine's constants: imagenet-c | cifar-c | auto (cifar-c at <= 64 px)

    def settings(self) -> list[CorruptionSetting]:
        return [CorruptionSetting(c, s) for c in self.names for s in self.severities]


@dataclass
class ShiftSpec:
    """A distribution-shift test set evaluated for clean accuracy under its own protocol (data/shifts.py)."""

    name: str
    root: str
    labels: Optional[str] = None
    samples: Optional[int] = None


@dataclass
class AttackSpec:
    configs: list[AttackConfig]
    samples: Optional[int] = None
    batch_size: Optional[int] = None
    check: Optional[str] = None  # one of CHECKS: an attack run to check the others, reported apart


CHECKS = ("pgd-short", "pgd-long", "large-eps", "transfer")


def _check_specs(c: ChecksSchema, path: str) -> list[AttackSpec]:
    """[checks] -> attack sweeps on one seeded subset: PGD-<steps> at eps (the reference the others are read
    against), PGD-<long_steps> x <long_restarts> at eps, PGD-<long_steps> at large_eps, and PGD-<steps> at eps
    crafted on the model's pair partner (planned per model; see plan_jobs)."""
    eps, large = parse_eps(c.eps, f"{path}: checks.eps"), parse_eps(c.large_eps, f"{path}: checks.large_eps")
    if not 0 < eps < large:
        raise QuestbenchError(f"suite {path}: checks: need 0 < eps < large_eps (got {c.eps!r} and {c.large_eps!r})")
    short = AttackConfig("pgd", eps, steps=c.steps)
    specs = [AttackSpec([short], c.samples, check="pgd-short"),
             AttackSpec([AttackConfig("pgd", eps, steps=c.long_steps, restarts=c.long_restarts)], c.samples,
                        check="pgd-long"),
             AttackSpec([AttackConfig("pgd", large, steps=c.long_steps)], c.samples, check="large-eps")]
    if c.transfer:
        specs.append(AttackSpec([short], c.samples, check="transfer"))
    return specs


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
    shifts: list[ShiftSpec] = field(default_factory=list)
    path: str = ""
    sha256: str = ""
    registry: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["attacks"] = [{"samples": a.samples, "batch_size": a.batch_size,
                         "configs": [c.resolved() for c in a.configs], **({"check": a.check} if a.check else {})}
                        for a in self.attacks]
        return d


def _corruption_names(value: Union[str, list[str]]) -> list[str]:
    groups = {"common": COMMON_CORRUPTIONS, "extra": EXTRA_CORRUPTIONS, "all": ALL_CORRUPTIONS}
    names = list(groups[value]) if isinstance(value, str) else list(value)
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise QuestbenchError(f"suite corruptions.names: listed twice: {', '.join(dup)}")
    return names


def _patch_spec(a: AttackSchema, where: str) -> AttackSpec:
    if a.eps is not None or a.step_size_ratio is not None or a.random_start is not True:
        raise QuestbenchError(f"suite {where}: a patch attack takes patches (counts), not eps, step_size_ratio or "
                              "random_start")
    if a.patches is None:
        raise QuestbenchError(f"suite {where}: give patches (a count or a list of counts for a sweep)")
    if a.loss not in ("ce", "attention"):
        raise QuestbenchError(f"suite {where}: a patch attack's loss is \"ce\" or \"attention\", not {a.loss!r}")
    counts = a.patches if isinstance(a.patches, list) else [a.patches]
    if len(set(counts)) != len(counts):
        raise QuestbenchError(f"suite {where}: a patch count is listed twice")
    step = float(parse_eps(a.step_size, f"{where}.step_size")) if a.step_size is not None else 0.1
    configs = [PatchConfig(patches=k, loss=a.loss, size=a.patch_size or 1, steps=a.steps or 20, step_size=step,
                           restarts=a.restarts, position=a.position or "random", halve_every=a.halve_every or 0,
                           layers=tuple(a.layers) if a.layers is not None else None) for k in counts]
    return AttackSpec(configs, a.samples, a.batch_size)


def _attack_spec(a: AttackSchema, where: str) -> AttackSpec:
    if a.attack == "patch":
        return _patch_spec(a, where)
    if (a.patches is not None or a.patch_size is not None or a.position is not None or a.layers is not None
            or a.halve_every is not None):
        raise QuestbenchError(f"suite {where}: patches, patch_size, position, layers and halve_every belong to "
                              "attack = \"patch\"")
    if a.eps is None:
        raise QuestbenchError(f"suite {where}: give eps (a number or a list for a sweep)")
    if a.loss == "attention":
        raise QuestbenchError(f"suite {where}: loss = \"attention\" belongs to attack = \"patch\"")
    eps_list = [parse_eps(e, where) for e in (a.eps if isinstance(a.eps, list) else [a.eps])]
    if len(set(eps_list)) != len(eps_list):
        raise QuestbenchError(f"suite {where}: an eps is listed twice")
    if a.step_size is not None and a.step_size_ratio is not None:
        raise QuestbenchError(f"suite {where}: give step_size or step_size_ratio, not both")
    if a.attack != "pgd" and (a.steps is not None or a.step_size is not None or a.step_size_ratio is not None):
        raise QuestbenchError(f"suite {where}: steps and step sizes apply to pgd only ({a.attack} uses its own)")
    if a.attack in ("fgsm", "autoattack", "autoattack-fast") and (a.loss != "ce" or a.restarts != 1):
        raise QuestbenchError(f"suite {where}: {a.attack} uses its own loss and restarts")
    configs = []
    for eps in eps_list:
        step_size = parse_eps(a.step_size, f"{where}.step_size") if a.step_size is not None else (
            a.step_size_ratio * eps if a.step_size_ratio is not None else None)
        configs.append(AttackConfig(attack=a.attack, eps=eps, norm=a.norm,
                                    steps=a.steps if a.steps is not None else (10 if a.attack == "pgd" else 0),
                                    step_size=step_size, restarts=a.restarts, random_start=a.random_start,
                                    loss=a.loss))
    return AttackSpec(configs, a.samples, a.batch_size)


_TYPE_MISMATCH = ("literal_error", "string_type", "int_type", "bool_type", "float_type", "list_type", "dict_type",
                  "model_type", "model_attributes_type", "int_parsing", "float_parsing")


def _schema_error(exc: ValidationError, path: str) -> QuestbenchError:
    # union members tag the location ('bool', 'CleanSchema', "literal['common']"): keep only the keys
    tags = ("bool", "int", "float", "str", "list", "dict")

    def keys(e) -> list[str]:
        return [str(p) for p in e["loc"] if not (str(p) in tags or "[" in str(p) or str(p).endswith("Schema")
                                                 or str(p).startswith(("function-", "constrained-")))]

    # a value that fails every member of a union reports one error per member: name the one that says most
    # (an unknown key, then a range or length over a type mismatch, then the deepest key)
    e = max(exc.errors(), key=lambda e: (e["type"] == "extra_forbidden", e["type"] not in _TYPE_MISMATCH,
                                         len(keys(e))))
    loc = ".".join(keys(e))
    msg = e["msg"]
    if e["type"] == "extra_forbidden":
        msg = "unknown key"
    got = e.get("input")
    got_text = "" if e["type"] in ("extra_forbidden", "missing") or isinstance(got, dict) else f" (got {got!r})"
    more = f"; {len(exc.errors()) - 1} more problem(s)" if len(exc.errors()) > 1 else ""
    return QuestbenchError(f"suite {path}: {loc or 'top level'}: {msg}{got_text}{more}")


def parse_suite(text: str, path: str = "<string>") -> Suite:
    if not isinstance(text, str):
        raise QuestbenchError(f"a suite is TOML text, not {type(text).__name__}")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise QuestbenchError(f"suite {path} is not valid TOML: {exc}") from None
    return _from_mapping(raw, text, path)


def _from_mapping(raw: dict, text: str, path: str) -> Suite:
    """A validated, resolved suite from its mapping; ``text`` is what its sha256 is taken of."""
    try:
        sch = SuiteSchema.model_validate(raw)
    except ValidationError as exc:
        raise _schema_error(exc, path) from None
    corruptions = None
    if sch.corruptions is not None:
        c = sch.corruptions
        corruptions = CorruptionSpec(names=_corruption_names(c.names), severities=list(c.severities), mode=c.mode,
                                     root=c.root, samples=c.samples, engine=c.engine,
                                     params=c.params or ("auto" if c.engine == "torch" else "imagenet-c"))
        if c.engine == "torch" and c.mode != "native":
            raise QuestbenchError(f"suite {path}: corruptions.engine \"torch\" runs in mode \"native\" only (the "
                                  f"faithful ImageNet-C mode and released sets stay on their reference), not {c.mode!r}")
        if c.engine == "imagecorruptions" and corruptions.params != "imagenet-c":
            raise QuestbenchError(f"suite {path}: corruptions.params {c.params!r} needs engine = \"torch\" "
                                  "(imagecorruptions has the ImageNet-C constants only)")
        if len(set(c.severities)) != len(c.severities):
            raise QuestbenchError(f"suite {path}: corruptions.severities: a severity is listed twice")
        if c.mode in ("imagenet-c", "cifar-c") and not c.root:
            raise QuestbenchError(f"suite [corruptions]: mode {c.mode!r} needs root = <folder>")
        for name in corruptions.names:
            check_corruption(name, 1)
    if sch.data.classes is not None and sch.data.dataset.lower() not in ("imagenet", "imagefolder"):
        raise QuestbenchError(f"suite {path}: data.classes (a class order file) applies to image folders "
                              f"(dataset = \"imagenet\"), not {sch.data.dataset!r}")
    shifts = []
    for shift_name, v in sch.shifts.items():
        if shift_name not in SHIFT_DATASETS:
            raise QuestbenchError(f"suite {path}: shifts.{shift_name}: unknown shift dataset; known: "
                                  f"{', '.join(SHIFT_DATASETS)}")
        spec = ShiftSchema(root=v) if isinstance(v, str) else v
        shifts.append(ShiftSpec(shift_name, spec.root, spec.labels, spec.samples))
    if sch.data.samples is not None:  # a larger count would be cut to data.samples without a word
        wanted = [("corruptions.samples", sch.corruptions.samples if sch.corruptions else None),
                  ("diagnostics.samples", sch.diagnostics.samples if sch.diagnostics else None),
                  ("checks.samples", sch.checks.samples if sch.checks else None)] + \
            [(f"attacks.{n}.samples", a.samples) for n, a in enumerate(sch.attacks)]
        for key, k in wanted:
            if k is not None and k > sch.data.samples:
                raise QuestbenchError(f"suite {path}: {key} = {k} exceeds data.samples = {sch.data.samples} (every "
                                      "evaluation draws from the same seeded subset): raise data.samples or lower it")
    clean = sch.clean if isinstance(sch.clean, bool) else sch.clean.enabled
    # a name from the file's stem is made folder-safe ('my suite.toml' -> 'my-suite'); a name given is checked
    name = sch.name or (re.sub(r"[^A-Za-z0-9._-]+", "-", Path(path).stem).strip("-._")[:100] or "suite"
                        if path != "<dict>" else "python")
    if not re.match(NAME_PATTERN, name):
        raise QuestbenchError(f"suite {path}: name {name!r} must be letters, digits, '.', '_' or '-'")
    return Suite(
        name=name, description=sch.description, models=list(sch.models), data=DataSpec(**sch.data.model_dump()),
        seed=sch.seed, device=sch.device, batch_size=sch.batch_size, num_workers=sch.num_workers,
        precision=sch.precision, clean=clean, corruptions=corruptions,
        attacks=[_attack_spec(a, f"{path}: attacks.{n}") for n, a in enumerate(sch.attacks)]
        + (_check_specs(sch.checks, path) if sch.checks is not None else []),
        diagnostics_samples=sch.diagnostics.samples if sch.diagnostics is not None else None, shifts=shifts,
        path=path, sha256=hashlib.sha256(text.encode()).hexdigest(), registry=list(sch.registry))


def suite_from(suite) -> Suite:
    """A suite from a built-in name, a TOML path, a mapping of the same keys, or a Suite."""
    if isinstance(suite, Suite):
        return suite
    if isinstance(suite, dict):
        import json
        text = json.dumps(suite, sort_keys=True, default=str)  # the canonical text its sha256 is taken of
        return _from_mapping(suite, text, "<dict>")
    return load_suite(suite)


def builtin_suites_dir() -> Path:
    return Path(str(resources.files("questbench").joinpath("suites")))


def list_suites() -> list[tuple[str, str]]:
    out = []
    for f in sorted(builtin_suites_dir().glob("*.toml")):
        raw = tomllib.loads(f.read_text())
        out.append((f.stem, raw.get("description", "")))
    return out


def read_suite_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise QuestbenchError(f"suite {path} is not a UTF-8 text file (a TOML suite was expected)") from None
    except OSError as exc:
        raise QuestbenchError(f"cannot read suite {path}: {exc.strerror}") from None


def load_suite(name_or_path: Optional[str] = None) -> Suite:
    """A suite by built-in name (``default``, ``fmnist-full``, ...) or by path to a TOML file."""
    name_or_path = name_or_path or "default"
    if not isinstance(name_or_path, (str, Path)):
        raise QuestbenchError(f"a suite is a built-in name or a TOML path, not {type(name_or_path).__name__}")
    p = Path(name_or_path)
    if p.is_dir():
        raise QuestbenchError(f"suite {p} is a folder, not a TOML file")
    if not p.is_file():
        builtin = builtin_suites_dir() / f"{name_or_path}.toml"
        if not builtin.is_file():
            known = ", ".join(n for n, _ in list_suites())
            raise QuestbenchError(f"no suite file {name_or_path!r} and no built-in suite of that name (built in: {known})")
        p = builtin
    return parse_suite(read_suite_text(p), str(p))
