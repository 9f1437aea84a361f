"""Suite files (TOML) -> validated, fully resolved suites.

A suite is one pydantic model (strict types, unknown keys forbidden) used as it is: each section validates and
resolves itself (group names to corruption lists, eps strings to numbers, attack entries to their configs), and
the rules between keys are model validators. Every mistake is one QuestbenchError naming the key and what it
should be, raised before anything runs.
"""
from __future__ import annotations

import hashlib
import math
import re
import tomllib
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, create_model,
                      field_validator, model_validator)
from pydantic_core import PydanticCustomError

from .._io import parse_toml
from ..errors import QuestbenchError
from ..kinds import KINDS
from .corruptions import ALL_CORRUPTIONS, COMMON_CORRUPTIONS, EXTRA_CORRUPTIONS
from .settings import APGD_RESTARTS, ATTACKS, SHIFT_DATASETS, AttackConfig, CorruptionSetting, PatchConfig, check_corruption

CORRUPTION_SOURCES = ("native", "faithful", "imagenet-c", "cifar-c")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"  # a suite name becomes a folder name under runs/
DEVICE_PATTERN = r"^(auto|cpu|cuda(:[0-9]+)?)$"
CHECKS = ("pgd-short", "pgd-long", "large-eps", "transfer")

PositiveInt = Annotated[int, Field(gt=0)]
Fractionish = Union[int, float, str]  # 0.03, 8/255 as "8/255"


def _rule(message: str) -> PydanticCustomError:
    """A broken rule between keys, reported like a schema error: 'suite <path>: <section>: <message>'."""
    return PydanticCustomError("questbench", message)  # no context given: the text is not formatted


def _eps_problem(value: Any) -> tuple[Optional[float], str]:
    """(eps, '') for a number or a fraction string such as "1/255" in [0, 1], else (None, what is wrong)."""
    eps = None
    try:
        if isinstance(value, str):
            eps = float(Fraction(value.strip()))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            eps = float(value)
    except (ValueError, ZeroDivisionError, OverflowError):
        pass
    if eps is None or not math.isfinite(eps):
        return None, f"eps {value!r} is not a number or a fraction like \"1/255\""
    if not 0 <= eps <= 1:
        return None, f"eps {value!r} is outside [0, 1] (images are in [0, 1]; write 8/255 as \"8/255\")"
    return eps, ""


def parse_eps(value: Any, where: str) -> float:
    """An eps from the command line or a suite key (0 anchors a sweep); one line naming ``where`` if it is bad."""
    eps, problem = _eps_problem(value)
    if eps is None:
        raise QuestbenchError(f"{where if where.startswith('--') else 'suite ' + where}: {problem}")
    return eps


def _eps(value: Any) -> float:
    eps, problem = _eps_problem(value)
    if eps is None:
        raise _rule(problem)
    return eps


class _Schema(BaseModel):
    # defaults are validated too: a default group name ("common") must resolve like a written one
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


class DataSpec(_Schema):
    dataset: str = "fashion-mnist"
    split: str = "test"
    root: Optional[str] = None
    samples: Optional[PositiveInt] = None
    classes: Optional[str] = None  # image folders: a file of wnids, one per line, fixing the class order
    # image folders: short side resized to `resize`, then a `crop` x `crop` center crop (ImageNet's 256 / 224);
    # 0 skips that step, both 0 show the images as stored (a 32 px CIFAR folder to a 32 px model)
    resize: Optional[Annotated[int, Field(ge=0)]] = None
    crop: Optional[Annotated[int, Field(ge=0)]] = None

    @model_validator(mode="after")
    def _classes_need_a_folder(self) -> "DataSpec":
        folder = self.dataset.lower() in ("imagenet", "imagefolder")
        for key in ("classes", "resize", "crop"):
            if getattr(self, key) is not None and not folder:
                raise _rule(f"{key} applies to image folders (dataset = \"imagenet\" or \"imagefolder\"), not "
                            f"{self.dataset!r}")
        return self

    def loader_kwargs(self) -> dict[str, Any]:
        """Extra arguments for the dataset loader: the class order file and the view of an image folder."""
        view = {k: getattr(self, k) for k in ("resize", "crop") if getattr(self, k) is not None}
        if self.classes is None:
            return view
        path = Path(self.classes)
        if not path.is_file():
            raise QuestbenchError(f"suite data.classes: no file {path}")
        try:
            wnids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        except UnicodeDecodeError:
            raise QuestbenchError(f"suite data.classes: {path} is not a text file of class names") from None
        if not wnids:
            raise QuestbenchError(f"suite data.classes: {path} lists no classes")
        return {"classes": wnids, **view}


class CorruptionSpec(_Schema):
    # a group name is resolved to its list: after validation ``names`` is always the list that runs
    names: Union[Literal["common", "extra", "all"], Annotated[list[str], Field(min_length=1)]] = "common"
    severities: Annotated[list[Annotated[int, Field(ge=1, le=5)]], Field(min_length=1)] = [1, 2, 3, 4, 5]
    mode: Literal["native", "faithful", "imagenet-c", "cifar-c"] = "native"  # on the fly, or released from disk
    root: Optional[str] = None
    samples: Optional[PositiveInt] = None
    # the reference library, or questbench's batched torch engine (validated against it, bench/RESULTS.md); unset:
    # torch for on-the-fly native corruptions (what every built-in suite and the Python API use), else the reference
    engine: Optional[Literal["imagecorruptions", "torch"]] = None
    # the torch engine's constants; unset: "auto" (cifar-c at <= 64 px) for torch, "imagenet-c" otherwise
    params: Optional[Literal["imagenet-c", "cifar-c", "auto"]] = None

    @field_validator("names")
    @classmethod
    def _resolve_names(cls, value: Union[str, list[str]]) -> list[str]:
        groups = {"common": COMMON_CORRUPTIONS, "extra": EXTRA_CORRUPTIONS, "all": ALL_CORRUPTIONS}
        names = list(groups[value]) if isinstance(value, str) else list(value)
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise _rule(f"listed twice: {', '.join(dup)}")
        for name in names:
            try:
                check_corruption(name, 1)
            except QuestbenchError as exc:
                raise _rule(str(exc)) from None
        return names

    @field_validator("severities")
    @classmethod
    def _distinct(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise _rule("a severity is listed twice")
        return value

    @model_validator(mode="after")
    def _engine_rules(self) -> "CorruptionSpec":
        if self.engine is None:
            self.engine = "torch" if self.mode == "native" else "imagecorruptions"
        if self.params is None:
            self.params = "auto" if self.engine == "torch" else "imagenet-c"
        if self.engine == "torch" and self.mode != "native":
            raise _rule(f"engine \"torch\" runs in mode \"native\" only (the faithful ImageNet-C mode and released "
                        f"sets stay on their reference), not {self.mode!r}")
        if self.engine == "imagecorruptions" and self.params != "imagenet-c":
            raise _rule(f"params {self.params!r} needs engine = \"torch\" (imagecorruptions has the ImageNet-C "
                        "constants only)")
        if self.mode in ("imagenet-c", "cifar-c") and not self.root:
            raise _rule(f"mode {self.mode!r} needs root = <folder>")
        return self

    def settings(self) -> list[CorruptionSetting]:
        return [CorruptionSetting(c, s) for c in self.names for s in self.severities]

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump()


EpsSweep = Union[Fractionish, Annotated[list[Fractionish], Field(min_length=1)]]


class _SweepSpec(_Schema):
    """What every ``[[attacks]]`` entry has: one attack over a sweep (eps values or patch counts), resolved to one
    config per value (``configs``). An entry made by [checks] carries the check's name (``check``). Which keys
    an entry may have follows from its ``attack`` (a discriminated union: a key of another attack is unknown)."""

    samples: Optional[PositiveInt] = None
    batch_size: Optional[PositiveInt] = None
    _configs: list[Union[AttackConfig, PatchConfig]] = PrivateAttr(default_factory=list)
    _check: Optional[str] = PrivateAttr(None)

    @model_validator(mode="after")
    def _resolve(self):
        try:
            self._configs = self._make_configs()
        except QuestbenchError as exc:
            raise _rule(str(exc)) from None
        return self

    def _make_configs(self) -> list:
        raise NotImplementedError

    @property
    def configs(self) -> list[Union[AttackConfig, PatchConfig]]:
        return self._configs

    @property
    def check(self) -> Optional[str]:
        """One of CHECKS for an attack run to check the others (reported apart), else None."""
        return self._check

    def as_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "batch_size": self.batch_size, "configs": [c.resolved() for c in self.configs],
                **({"check": self.check} if self.check else {})}


class _EpsSweepSpec(_SweepSpec):
    eps: EpsSweep
    norm: Literal["Linf", "L2"] = "Linf"

    def _eps_list(self) -> list[float]:
        eps_list = [_eps(e) for e in (self.eps if isinstance(self.eps, list) else [self.eps])]
        if len({f"{e:.6g}" for e in eps_list}) != len(eps_list):  # "8/255" and 0.03137255 are one cell
            raise _rule("an eps is listed twice")
        return eps_list

    def _make_configs(self) -> list[AttackConfig]:
        return [AttackConfig(attack=self.attack, eps=eps, norm=self.norm, steps=0) for eps in self._eps_list()]


class FixedAttackSpec(_EpsSweepSpec):
    """FGSM and AutoAttack: an eps sweep with the attack's own steps, loss and restarts."""

    attack: Literal["fgsm", "autoattack", "autoattack-fast"]


class APGDSpec(_EpsSweepSpec):
    """The reference APGD-CE (pyautoattack, 100 iterations): its restarts are the one setting a suite chooses
    (5, APGDAttack's default, unless given; AutoAttack's standard version runs it with 1)."""

    attack: Literal["apgd-ce"]
    restarts: PositiveInt = APGD_RESTARTS

    def _make_configs(self) -> list[AttackConfig]:
        return [AttackConfig(attack="apgd-ce", eps=eps, norm=self.norm, steps=0, restarts=self.restarts)
                for eps in self._eps_list()]


class PGDSpec(_EpsSweepSpec):
    attack: Literal["pgd"]
    steps: PositiveInt = 10
    step_size: Optional[Fractionish] = None
    step_size_ratio: Optional[Annotated[float, Field(gt=0)]] = None
    restarts: PositiveInt = 1
    random_start: bool = True
    loss: Literal["ce", "dlr"] = "ce"
    stop_at_success: bool = False

    def _make_configs(self) -> list[AttackConfig]:
        if self.step_size is not None and self.step_size_ratio is not None:
            raise _rule("give step_size or step_size_ratio, not both")
        step = _eps(self.step_size) if self.step_size is not None else None
        return [AttackConfig(attack="pgd", eps=eps, norm=self.norm, steps=self.steps,
                             step_size=step if step is not None else (
                                 self.step_size_ratio * eps if self.step_size_ratio is not None else None),
                             restarts=self.restarts, random_start=self.random_start, loss=self.loss,
                             stop_at_success=self.stop_at_success)
                for eps in self._eps_list()]


class PatchSpec(_SweepSpec):
    """Adversarial patches over a sweep of patch counts (questbench.evaluators.patch)."""

    attack: Literal["patch"]
    patches: Union[Annotated[int, Field(ge=0)], Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]]
    patch_size: PositiveInt = 1
    position: Literal["random", "fixed", "worst"] = "random"
    layers: Optional[Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]] = None
    halve_every: Annotated[int, Field(ge=0)] = 0  # halve the step every n steps (0: fixed)
    steps: PositiveInt = 20
    step_size: Fractionish = 0.1
    restarts: PositiveInt = 1
    loss: Literal["ce", "attention"] = "ce"

    def _make_configs(self) -> list[PatchConfig]:
        counts = self.patches if isinstance(self.patches, list) else [self.patches]
        if len(set(counts)) != len(counts):
            raise _rule("a patch count is listed twice")
        return [PatchConfig(patches=k, loss=self.loss, size=self.patch_size, steps=self.steps,
                            step_size=_eps(self.step_size), restarts=self.restarts, position=self.position,
                            halve_every=self.halve_every, layers=tuple(self.layers) if self.layers is not None else None)
                for k in counts]


AttackSpec = Annotated[Union[FixedAttackSpec, APGDSpec, PGDSpec, PatchSpec], Field(discriminator="attack")]
ATTACK_TAGS = ATTACKS + ("patch",)  # the union's tags: they appear in an error's location, and are dropped there


class ChecksSpec(_Schema):
    """Extra attacks that say whether the suite's attack results can be trusted (Carlini et al. 2019), on one
    seeded subset: PGD-<steps> at eps (the reference the others are read against), PGD-<long_steps> x
    <long_restarts> at eps, PGD-<long_steps> at large_eps, and PGD-<steps> at eps crafted on the model's pair
    partner (planned per model; see plan_jobs)."""

    samples: PositiveInt = 100
    eps: Fractionish = "8/255"
    steps: PositiveInt = 10
    long_steps: PositiveInt = 50
    long_restarts: PositiveInt = 3
    large_eps: Fractionish = "64/255"
    transfer: bool = True
    # the challengers (the long PGD and the large budget) stop attacking an image once it is fooled and count it
    # fooled: stronger (any iterate counts, not only the last) and cheaper (fooled images cost no more steps)
    stop_at_success: bool = False
    _sweeps: list[PGDSpec] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _resolve(self) -> "ChecksSpec":
        eps, large = _eps(self.eps), _eps(self.large_eps)
        if not 0 < eps < large:
            raise _rule(f"need 0 < eps < large_eps (got {self.eps!r} and {self.large_eps!r})")
        runs = [("pgd-short", eps, self.steps, 1), ("pgd-long", eps, self.long_steps, self.long_restarts),
                ("large-eps", large, self.long_steps, 1)] + ([("transfer", eps, self.steps, 1)] if self.transfer
                                                              else [])
        self._sweeps = []
        for check, e, steps, restarts in runs:
            stop = self.stop_at_success and check in ("pgd-long", "large-eps")
            spec = PGDSpec(attack="pgd", eps=e, steps=steps, restarts=restarts, samples=self.samples,
                           stop_at_success=stop)
            spec._check = check
            self._sweeps.append(spec)
        return self

    @property
    def sweeps(self) -> list[PGDSpec]:
        return self._sweeps


class ShiftSpec(_Schema):
    """A distribution-shift test set evaluated for clean accuracy under its own protocol (data/shifts.py)."""

    root: str
    labels: Optional[str] = None  # ImageNet-ReaL: real.json (default: the copy timm ships)
    samples: Optional[PositiveInt] = None


class DiagnosticsSpec(_Schema):
    samples: PositiveInt = 64


class CleanSpec(_Schema):
    enabled: bool = True


ENDPOINT_PATTERN = re.compile(r"attacks\[(\d+)\]\s+(\S+)")


class StudySpec(_Schema):
    """A study's primary endpoints, declared before its numbers (the report concludes each one as better, worse,
    equivalent within ``margin_pp``, or inconclusive, with Holm across them): "clean", "corruption" (the drop
    from clean to corrupted accuracy over the whole grid: the relative corruption error) and "attacks[i] eps"
    (robust accuracy of the i-th [[attacks]] entry, counted from 0, at one of its eps). Everything else the
    report shows is secondary."""

    primary: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    margin_pp: Optional[Annotated[float, Field(gt=0, le=100)]] = None  # equivalence margin, percentage points

    def endpoints(self, suite: "Suite") -> list[dict[str, Any]]:
        """Each endpoint resolved against ``suite``; a QuestbenchError-worthy rule error when one names nothing."""
        out = []
        for name in self.primary:
            if name == "clean":
                if not suite.clean:
                    raise _rule("study endpoint 'clean' needs the clean evaluation")
                out.append({"name": name, "evaluation": "clean"})
            elif name == "corruption":
                if suite.corruptions is None or not suite.clean:
                    raise _rule("study endpoint 'corruption' (relative corruption error) needs [corruptions] "
                                "and the clean evaluation")
                out.append({"name": name, "evaluation": "corruption"})
            elif m := ENDPOINT_PATTERN.fullmatch(name.strip()):
                i, eps = int(m.group(1)), parse_eps(m.group(2), f"study endpoint {name!r}")
                if i >= len(suite.attacks) or suite.attacks[i].attack == "patch":
                    raise _rule(f"study endpoint {name!r}: there is no [[attacks]] entry {i} with an eps sweep "
                                f"(the suite has {len(suite.attacks)}, counted from 0)")
                if not any(abs(c.eps - eps) < 1e-9 for c in suite.attacks[i].configs) or eps == 0:
                    raise _rule(f"study endpoint {name!r}: [[attacks]] entry {i} does not run eps {m.group(2)}")
                out.append({"name": name, "evaluation": "attack", "sweep": i, "eps": eps})
            else:
                raise _rule(f"study endpoint {name!r}: write 'clean', 'corruption' or 'attacks[i] eps' "
                            "(e.g. 'attacks[1] 8/255')")
        if len({e["name"] for e in out}) != len(out):
            raise _rule("a study endpoint is listed twice")
        return out


class _Suite(_Schema):
    """A validated suite: the TOML keys as they were given, resolved. ``sweeps`` are the attack runs in plan
    order ([[attacks]] entries, then the [checks] runs); ``path`` and ``sha256`` name the text it came from. A
    kind with a suite table of its own (questbench.kinds, ``Kind.section``) adds it as an optional key."""

    name: Optional[Annotated[str, Field(pattern=NAME_PATTERN)]] = None  # unset: the file's stem, made folder-safe
    description: str = ""
    models: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0
    device: Annotated[str, Field(pattern=DEVICE_PATTERN)] = "auto"
    batch_size: PositiveInt = 256
    num_workers: Annotated[int, Field(ge=0, le=256)] = 2
    precision: Literal["fp32", "bf16"] = "fp32"
    data: DataSpec = DataSpec()
    clean: Union[bool, CleanSpec] = True  # a table {enabled = ...} reads as its bool
    corruptions: Optional[CorruptionSpec] = None
    attacks: list[AttackSpec] = []
    diagnostics: Optional[DiagnosticsSpec] = None
    checks: Optional[ChecksSpec] = None
    study: Optional[StudySpec] = None
    shifts: dict[str, Union[str, ShiftSpec]] = {}  # a bare string is the root: resolved to a ShiftSpec
    registry: list[str] = []
    _path: str = PrivateAttr("")
    _sha256: str = PrivateAttr("")

    @field_validator("models")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        dup = sorted({m for m in v if v.count(m) > 1})
        if dup:
            raise ValueError(f"model(s) listed twice: {', '.join(dup)}")
        return v

    @field_validator("clean")
    @classmethod
    def _clean_flag(cls, v: Union[bool, CleanSpec]) -> bool:
        return v if isinstance(v, bool) else v.enabled

    @field_validator("shifts")
    @classmethod
    def _known_shifts(cls, v: dict[str, Union[str, ShiftSpec]]) -> dict[str, ShiftSpec]:
        for name in v:
            if name not in SHIFT_DATASETS:
                raise _rule(f"{name}: unknown shift dataset; known: {', '.join(SHIFT_DATASETS)}")
        return {name: ShiftSpec(root=s) if isinstance(s, str) else s for name, s in v.items()}

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> "Suite":
        context = info.context or {}
        self._path, self._sha256 = context.get("path", "<dict>"), context.get("sha256", "")
        if self.data.samples is not None:  # a larger count would be cut to data.samples without a word
            wanted = [("corruptions.samples", self.corruptions.samples if self.corruptions else None),
                      ("diagnostics.samples", self.diagnostics.samples if self.diagnostics else None),
                      ("checks.samples", self.checks.samples if self.checks else None)] + \
                [(f"attacks.{n}.samples", a.samples) for n, a in enumerate(self.attacks)]
            for key, k in wanted:
                if k is not None and k > self.data.samples:
                    raise _rule(f"{key} = {k} exceeds data.samples = {self.data.samples} (every evaluation draws "
                                "from the same seeded subset): raise data.samples or lower it")
        if self.study is not None:
            self.study.endpoints(self)
        if self.name is None:  # a name from the file's stem is made folder-safe ('my suite.toml' -> 'my-suite')
            stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(self._path).stem).strip("-._")[:100]
            self.name = "python" if self._path == "<dict>" else (stem or "suite")
            if not re.match(NAME_PATTERN, self.name):
                raise _rule(f"name {self.name!r} must be letters, digits, '.', '_' or '-'")
        return self

    @property
    def path(self) -> str:
        return self._path

    @property
    def sha256(self) -> str:
        return self._sha256

    @property
    def sweeps(self) -> list[AttackSpec]:
        """Every attack run in plan order: the [[attacks]] entries, then the [checks] runs."""
        return self.attacks + (self.checks.sweeps if self.checks is not None else [])

    @property
    def diagnostics_samples(self) -> Optional[int]:
        return self.diagnostics.samples if self.diagnostics is not None else None

    def as_dict(self) -> dict[str, Any]:
        """The resolved suite as recorded in a run's provenance (its run_config identifies the folder)."""
        return {"name": self.name, "description": self.description, "models": list(self.models),
                "data": self.data.model_dump(), "seed": self.seed, "device": self.device,
                "batch_size": self.batch_size, "num_workers": self.num_workers, "precision": self.precision,
                "clean": self.clean, "corruptions": self.corruptions.as_dict() if self.corruptions else None,
                "attacks": [a.as_dict() for a in self.sweeps], "diagnostics_samples": self.diagnostics_samples,
                "shifts": [{"name": n, **s.model_dump()} for n, s in self.shifts.items()], "path": self.path,
                "sha256": self.sha256, "registry": list(self.registry),
                **({"study": {"primary": self.study.endpoints(self), "margin_pp": self.study.margin_pp}}
                   if self.study is not None else {}),
                **{name: getattr(self, name).model_dump() for name in KIND_SECTIONS
                   if getattr(self, name) is not None}}


# the suite tables of kinds that bring their own (absent from a suite: the kind plans nothing)
KIND_SECTIONS = {k.name: k.section for k in KINDS.values() if k.section is not None}
assert not set(KIND_SECTIONS) & set(_Suite.model_fields), "a kind's suite table shadows a built-in key"
Suite = create_model("Suite", __base__=_Suite, __module__=__name__,
                     **{name: (Optional[section], None) for name, section in KIND_SECTIONS.items()})
Suite.__doc__ = _Suite.__doc__


_TYPE_MISMATCH = ("literal_error", "string_type", "int_type", "bool_type", "float_type", "list_type", "dict_type",
                  "model_type", "model_attributes_type", "int_parsing", "float_parsing")


def _schema_error(exc: ValidationError, path: str) -> QuestbenchError:
    # union members tag the location ('bool', 'CleanSpec', "literal['common']"): keep only the keys
    tags = ("bool", "int", "float", "str", "list", "dict")

    def keys(e) -> list[str]:
        return [str(p) for p in e["loc"] if not (str(p) in tags or "[" in str(p) or str(p).endswith("Spec")
                                                 or str(p).startswith(("function-", "constrained-"))
                                                 or str(p) in ATTACK_TAGS and "attacks" in e["loc"])]

    # a value that fails every member of a union reports one error per member: name the one that says most
    # (an unknown key, then a range or length over a type mismatch, then the deepest key)
    e = max(exc.errors(), key=lambda e: (e["type"] == "extra_forbidden", e["type"] not in _TYPE_MISMATCH,
                                         len(keys(e))))
    loc = ".".join(keys(e))
    msg = e["msg"]
    if e["type"] == "extra_forbidden":
        tag = next((str(p) for p in e["loc"] if str(p) in ATTACK_TAGS), None) if "attacks" in e["loc"] else None
        msg = f'unknown key (for attack = "{tag}")' if tag else "unknown key"
    elif e["type"] == "union_tag_invalid":
        msg = f"attack must be one of {', '.join(ATTACK_TAGS)}"
    got = e.get("input")
    got_text = "" if e["type"] in ("extra_forbidden", "missing", "questbench") or isinstance(got, dict) \
        else f" (got {got!r})"
    more = f"; {len(exc.errors()) - 1} more problem(s)" if len(exc.errors()) > 1 else ""
    where = loc or ("" if e["type"] == "questbench" else "top level")  # a rule between sections names its keys
    return QuestbenchError(f"suite {path}: {where + ': ' if where else ''}{msg}{got_text}{more}")


def parse_suite(text: str, path: str = "<string>") -> Suite:
    if not isinstance(text, str):
        raise QuestbenchError(f"a suite is TOML text, not {type(text).__name__}")
    return _from_mapping(parse_toml(text, f"suite {path}"), text, path)


def _from_mapping(raw: dict, text: str, path: str) -> Suite:
    """A validated, resolved suite from its mapping; ``text`` is what its sha256 is taken of."""
    try:
        return Suite.model_validate(raw, context={"path": path, "sha256": hashlib.sha256(text.encode()).hexdigest()})
    except ValidationError as exc:
        raise _schema_error(exc, path) from None


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
