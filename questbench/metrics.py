"""Metrics computed from per-sample outcomes: accuracy, CE/mCE, confidence intervals, paired tests.

AlexNet's ImageNet-C top-1 errors (Hendrycks & Dietterich, ICLR 2019; full 50k validation set) normalize
CE. They are keyed by corruption name; only the 15 common corruptions enter mCE.
"""
from __future__ import annotations

import csv
import math
from functools import lru_cache
from importlib import resources
from typing import Iterable, Mapping, Sequence

import numpy as np

from .errors import QuestbenchError

COMMON_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL_CORRUPTIONS = COMMON_CORRUPTIONS + EXTRA_CORRUPTIONS
# AlexNet top-1 error on clean ImageNet val: torchvision's alexnet acc@1 56.522 -> 43.478% error.
ALEXNET_CLEAN_ERROR = 0.43478
CORRUPTION_GROUP = {
    **{c: "noise" for c in COMMON_CORRUPTIONS[:3]},
    **{c: "blur" for c in COMMON_CORRUPTIONS[3:7]},
    **{c: "weather" for c in COMMON_CORRUPTIONS[7:11]},
    **{c: "digital" for c in COMMON_CORRUPTIONS[11:]},
    **{c: "extra" for c in EXTRA_CORRUPTIONS},
}


@lru_cache(maxsize=1)
def alexnet_errors() -> dict[str, tuple[float, ...]]:
    """AlexNet top-1 error per corruption, severities 1..5, as fractions."""
    text = resources.files("questbench.data").joinpath("alexnet_imagenet_c_top1_error.csv").read_text()
    rows = csv.DictReader(text.splitlines())
    return {r["corruption"]: tuple(float(r[f"severity_{s}"]) for s in range(1, 6)) for r in rows}


def _check_errors(name: str, errs: Sequence[float]) -> np.ndarray:
    arr = np.asarray(errs, dtype=float)
    if arr.shape != (5,):
        raise QuestbenchError(f"{name}: expected 5 errors (severities 1..5), got {arr.shape[0] if arr.ndim else 0}")
    if np.any(arr < 0) or np.any(arr > 1):
        raise QuestbenchError(f"{name}: errors must be fractions in [0, 1]")
    return arr


def corruption_error(name: str, errs: Sequence[float]) -> float:
    """CE in percent: sum of errors over severities divided by AlexNet's sum for the same corruption."""
    base = alexnet_errors().get(name)
    if base is None:
        raise QuestbenchError(f"no AlexNet baseline for corruption {name!r}")
    return 100.0 * float(_check_errors(name, errs).sum() / sum(base))


def relative_corruption_error(name: str, errs: Sequence[float], clean_error: float) -> float:
    """Relative CE in percent: (sum of (E_s - E_clean)) / (sum of (E_s^AlexNet - E_clean^AlexNet))."""
    base = alexnet_errors()[name]
    alexnet_clean_error = ALEXNET_CLEAN_ERROR
    num = float((_check_errors(name, errs) - clean_error).sum())
    return 100.0 * num / (sum(base) - 5 * alexnet_clean_error)


def mce(errors: Mapping[str, Sequence[float]]) -> float:
    """mCE in percent over the 15 common corruptions; extra corruptions in the mapping are ignored.

    All 15 common corruptions must be present: a partial mean is not mCE.
    """
    missing = [c for c in COMMON_CORRUPTIONS if c not in errors]
    if missing:
        raise QuestbenchError(f"mCE needs all 15 common corruptions; missing: {', '.join(missing)}")
    return float(np.mean([corruption_error(c, errors[c]) for c in COMMON_CORRUPTIONS]))


def relative_mce(errors: Mapping[str, Sequence[float]], clean_error: float) -> float:
    missing = [c for c in COMMON_CORRUPTIONS if c not in errors]
    if missing:
        raise QuestbenchError(f"relative mCE needs all 15 common corruptions; missing: {', '.join(missing)}")
    return float(np.mean([relative_corruption_error(c, errors[c], clean_error) for c in COMMON_CORRUPTIONS]))


def mean_corruption_error(errors: Mapping[str, Sequence[float]]) -> float:
    """Unnormalized mean corruption error in percent (for datasets without an AlexNet baseline)."""
    if not errors:
        raise QuestbenchError("no corruption errors given")
    return 100.0 * float(np.mean([np.mean(np.asarray(v, dtype=float)) for v in errors.values()]))


def wilson_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for an accuracy, as fractions."""
    if total == 0:
        return (math.nan, math.nan)
    p = correct / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def mcnemar(a_correct: Iterable[bool], b_correct: Iterable[bool]) -> dict[str, float]:
    """Exact McNemar test on paired per-sample outcomes (two-sided binomial on discordant pairs)."""
    a = np.asarray(list(a_correct), dtype=bool)
    b = np.asarray(list(b_correct), dtype=bool)
    if a.shape != b.shape:
        raise QuestbenchError("paired test needs the same samples for both models")
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(~a & b))
    n = only_a + only_b
    if n == 0:
        return {"only_a": 0, "only_b": 0, "p_value": 1.0}
    k = min(only_a, only_b)
    # two-sided exact binomial p-value with p=0.5, computed in log space for large n
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2) for i in range(k + 1)]
    tail = math.fsum(math.exp(x) for x in logs)
    return {"only_a": only_a, "only_b": only_b, "p_value": min(1.0, 2 * tail)}


def paired_bootstrap(a_correct: Iterable[bool], b_correct: Iterable[bool], n_boot: int = 2000,
                     seed: int = 0) -> dict[str, float]:
    """Paired bootstrap of the accuracy difference b - a (percentage points) with a 95% interval."""
    a = np.asarray(list(a_correct), dtype=float)
    b = np.asarray(list(b_correct), dtype=float)
    if a.shape != b.shape or a.size == 0:
        raise QuestbenchError("paired bootstrap needs the same, non-empty samples for both models")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_boot, a.size))
    diffs = (b[idx] - a[idx]).mean(axis=1) * 100
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"delta_pp": float((b.mean() - a.mean()) * 100), "ci_low": float(lo), "ci_high": float(hi)}
