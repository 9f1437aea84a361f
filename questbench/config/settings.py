"""Evaluation settings as plain data (no torch): attack configurations, corruption settings and the attention
kind names. Suites, registries and the command line validate against these without importing the evaluators."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Optional

from ..errors import QuestbenchError
from .corruptions import ALL_CORRUPTIONS

ATTENTION_NAMES = ("standard", "quest", "qnorm", "qknorm_hs", "qknorm_ds")  # attention.ATTENTION_KINDS' keys
ATTACKS = ("fgsm", "pgd", "autoattack", "apgd-ce", "autoattack-fast")
NORMS = ("Linf", "L2")
APGD_RESTARTS = 5  # pyautoattack 0.2.0's APGDAttack default, which its "custom" version keeps
SHIFT_DATASETS = ("imagenet-a", "imagenet-r", "imagenet-sketch", "imagenet-v2", "imagenet-real")


@dataclass(frozen=True)
class AttackConfig:
    attack: str
    eps: float
    norm: str = "Linf"
    steps: int = 0  # fgsm: 1; pgd: as given; autoattack: the reference's own (100)
    step_size: Optional[float] = None  # absolute; pgd default 2.5 * eps / steps (Madry et al.)
    restarts: Optional[int] = None  # None: the attack's own default (apgd-ce: 5, pyautoattack's; the others: 1)
    random_start: bool = True
    loss: str = "ce"
    version: str = "standard"
    # pgd: an image stops being attacked at the first iterate that fools the model and counts as fooled (the
    # attack found an adversarial example in the budget), instead of being judged at the last iterate only
    stop_at_success: bool = False

    def __post_init__(self):
        if self.restarts is None:
            object.__setattr__(self, "restarts", APGD_RESTARTS if self.attack == "apgd-ce" else 1)
        if self.attack not in ATTACKS:
            raise QuestbenchError(f"unknown attack {self.attack!r}; known: {', '.join(ATTACKS)}")
        if self.norm not in NORMS:
            raise QuestbenchError(f"attack norm must be one of {NORMS}, not {self.norm!r}")
        if not (self.eps >= 0 and math.isfinite(self.eps)):
            raise QuestbenchError(f"eps must be a finite number >= 0, not {self.eps!r}")
        if self.attack == "pgd" and self.steps < 1:
            raise QuestbenchError("pgd needs steps >= 1")
        if self.restarts < 1:
            raise QuestbenchError("restarts must be >= 1")
        if self.attack in ("fgsm", "autoattack", "autoattack-fast", "apgd-ce") and self.loss != "ce":
            raise QuestbenchError(f"{self.attack} uses its own loss; only loss='ce' is accepted")
        if self.loss not in ("ce", "dlr"):
            raise QuestbenchError(f"attack loss must be ce or dlr, not {self.loss!r}")
        if self.loss == "dlr" and self.norm != "Linf":
            raise QuestbenchError("pgd with loss='dlr' is implemented for the Linf norm only")
        if self.stop_at_success and (self.attack != "pgd" or self.norm != "Linf"):
            raise QuestbenchError("stop_at_success is a setting of Linf pgd only")

    def resolved(self) -> dict[str, Any]:
        """The full configuration as run, with defaults filled in (recorded with every result)."""
        d = asdict(self)
        if not self.stop_at_success:  # absent unless asked for: the configurations made before it keep their keys
            d.pop("stop_at_success")
        if self.attack == "fgsm":
            d.update(steps=1, step_size=self.eps, random_start=False, restarts=1)
        elif self.attack == "pgd":
            d["step_size"] = self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps
            if self.restarts > 1:  # restarts after the first attack only the images still classified correctly
                d["restarts_on"] = "robust"
        elif self.attack in ("autoattack", "apgd-ce"):
            # the reference's own settings: version "standard" runs APGD-CE with one restart; APGD-CE alone
            # (version "custom") runs the restarts asked for, by default APGDAttack's own 5 (pyautoattack 0.2.0)
            d.update(steps=100, step_size=None, random_start=True, loss="ce" if self.attack == "apgd-ce" else
                     "ce+dlr-targeted+fab-targeted+square", version="standard" if self.attack == "autoattack"
                     else "custom", restarts=1 if self.attack == "autoattack" else self.restarts,
                     implementation="pyautoattack")
        elif self.attack == "autoattack-fast":
            d.update(steps=10, step_size=None, implementation="torchattacks", version="torchattacks-standard")
        d.setdefault("implementation", "torchattacks")
        return d

    @property
    def key(self) -> str:
        r = self.resolved()
        parts = [self.attack, self.norm, f"eps={self.eps:.6g}"]
        if self.attack == "pgd":
            parts += [f"steps={self.steps}", f"alpha={r['step_size']:.6g}", f"restarts={self.restarts}"]
            if not self.random_start:
                parts.append("no-random-start")
            if self.loss != "ce":
                parts.append(f"loss={self.loss}")
            if self.stop_at_success:
                parts.append("stop-at-success")
        elif self.attack == "apgd-ce" and self.restarts != APGD_RESTARTS:
            parts.append(f"restarts={self.restarts}")
        return "/".join(parts)


def check_corruption(corruption: str, severity: int) -> None:
    if corruption not in ALL_CORRUPTIONS:
        raise QuestbenchError(f"unknown corruption {corruption!r}; known: {', '.join(ALL_CORRUPTIONS)}")
    if severity not in (1, 2, 3, 4, 5):
        raise QuestbenchError(f"severity must be 1..5, not {severity!r}")


@dataclass(frozen=True)
class CorruptionSetting:
    corruption: str
    severity: int

    @property
    def key(self) -> str:
        return f"{self.corruption}/{self.severity}"


PATCH_LOSSES = ("ce", "attention")
PATCH_POSITIONS = ("random", "fixed", "worst")


@dataclass(frozen=True)
class PatchConfig:
    """An adversarial patch attack: ``patches`` square patches of ``size`` x ``size`` tokens, aligned to the
    model's token grid, pixels free in [0, 1] inside and untouched outside, optimized by signed-gradient ascent.

    ``loss="ce"`` raises the cross-entropy; ``loss="attention"`` raises the attention every query of the chosen
    layers gives the patch tokens (Attention-Fool's idea, Lovisotto et al. 2022). Positions: ``random`` (seeded
    per sample), ``fixed`` (the first tiles in raster order), ``worst`` (new random positions each restart, the
    worst restart counts). The patch count is the sweep's budget, stored where norm attacks keep eps."""

    patches: int
    loss: str = "ce"
    size: int = 1
    steps: int = 20
    step_size: float = 0.1
    restarts: int = 1
    position: str = "random"
    # halve the step every ``halve_every`` steps (0: a fixed step). The schedule depends on the step index
    # only, not on the step count, so a longer run repeats a shorter one's iterates.
    halve_every: int = 0
    layers: Optional[tuple[int, ...]] = None  # attention loss: these block indices (None: all)
    attack: str = "patch"
    norm: str = "patch"

    def __post_init__(self):
        if self.patches < 0 or self.size < 1 or self.steps < 1 or self.restarts < 1 or not self.step_size > 0:
            raise QuestbenchError("patch attack: patches >= 0, size, steps, restarts >= 1 and step_size > 0")
        if self.halve_every < 0:
            raise QuestbenchError("patch attack: halve_every >= 0 (0: a fixed step size)")
        if self.loss not in PATCH_LOSSES:
            raise QuestbenchError(f"patch loss must be one of {PATCH_LOSSES}, not {self.loss!r}")
        if self.position not in PATCH_POSITIONS:
            raise QuestbenchError(f"patch position must be one of {PATCH_POSITIONS}, not {self.position!r}")
        if self.layers is not None and self.loss != "attention":
            raise QuestbenchError("patch attack: layers choose the attention loss's layers; with loss "
                                  f"{self.loss!r} they would be recorded and not used")

    @property
    def eps(self) -> float:
        return float(self.patches)

    def resolved(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = list(self.layers) if self.layers is not None else "all"
        d["implementation"] = "questbench"
        return d

    def step_at(self, step: int) -> float:
        """The signed-gradient step taken from iterate ``step`` to ``step + 1``."""
        return self.step_size * 0.5 ** (step // self.halve_every) if self.halve_every else self.step_size

    @property
    def _schedule(self) -> list[str]:
        return [f"halve={self.halve_every}"] if self.halve_every else []  # absent: keys of fixed-step runs stay

    @property
    def trajectory_key(self) -> str:
        """What a restart's start depends on besides seed, sample and restart index: not steps or restarts, so
        more of either repeats the same trajectories (a sample fooled within k steps stays fooled)."""
        parts = ["patch", self.loss, f"patches={self.patches}", f"size={self.size}", f"step={self.step_size:.6g}",
                 *self._schedule, f"pos={self.position}"]
        if self.layers is not None:
            parts.append("layers=" + ",".join(map(str, self.layers)))
        return "/".join(parts)

    @property
    def key(self) -> str:
        parts = ["patch", self.loss, f"patches={self.patches}", f"size={self.size}", f"steps={self.steps}",
                 f"step={self.step_size:.6g}", *self._schedule, f"pos={self.position}", f"restarts={self.restarts}"]
        if self.layers is not None:
            parts.append("layers=" + ",".join(map(str, self.layers)))
        return "/".join(parts)
