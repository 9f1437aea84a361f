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

# the public `questbench.metrics.COMMON_CORRUPTIONS` (README); questbench itself imports them from config.corruptions
from ..config.corruptions import ALL_CORRUPTIONS, COMMON_CORRUPTIONS, CORRUPTION_GROUP, EXTRA_CORRUPTIONS  # noqa: F401
from ..errors import QuestbenchError

# AlexNet top-1 error on clean ImageNet val: torchvision's alexnet acc@1 56.522 -> 43.478% error.
ALEXNET_CLEAN_ERROR = 0.43478


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


# The smallest n for which a 95% interval on one accuracy near 50% is at most +-5 pp wide (1.96 * 0.5 / sqrt(n)
# <= 0.05): results on fewer samples cannot resolve the 5 pp differences at stake and are marked as such.
MIN_N_5PP = math.ceil((1.96 * 0.5 / 0.05) ** 2)  # 385


def resolves_5pp(n: int) -> bool:
    return n >= MIN_N_5PP


def mcnemar(a_correct: Iterable[bool], b_correct: Iterable[bool]) -> dict[str, float]:
    """Exact McNemar test on paired per-sample outcomes: two-sided binomial test (scipy) on the discordant pairs."""
    from scipy.stats import binomtest

    a = np.asarray(a_correct, dtype=bool)
    b = np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape:
        raise QuestbenchError("paired test needs the same samples for both models")
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(~a & b))
    n = only_a + only_b
    p = 1.0 if n == 0 else float(binomtest(only_b, n, 0.5, alternative="two-sided").pvalue)
    return {"only_a": only_a, "only_b": only_b, "p_value": p}


def per_image_sums(image_ids, a_correct, b_correct) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows (one per image and setting) -> per image: a's correct count, b's correct count, settings seen.

    Images are the sampled unit; every statistic over several settings works on these sums, so memory is
    O(images), not O(rows)."""
    codes, uniques = _factorize(image_ids)
    k = len(uniques)
    a = np.bincount(codes, weights=np.asarray(a_correct, dtype=float), minlength=k)
    b = np.bincount(codes, weights=np.asarray(b_correct, dtype=float), minlength=k)
    m = np.bincount(codes, minlength=k).astype(float)
    return a, b, m


def _factorize(values) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd
    codes, uniques = pd.factorize(np.asarray(values), sort=True)
    return codes, np.asarray(uniques)


def cluster_bootstrap(a_sum: np.ndarray, b_sum: np.ndarray, m: np.ndarray, n_boot: int = 2000,
                      seed: int = 0) -> dict[str, float]:
    """Paired bootstrap of b - a (pp) resampling images (clusters), each with all its settings, via
    scipy.stats.bootstrap (percentile interval). With one setting per image this is the ordinary paired
    bootstrap; with many correlated settings per image it is as wide as the images make it."""
    from scipy.stats import bootstrap

    d = np.asarray(b_sum, float) - np.asarray(a_sum, float)
    m = np.asarray(m, float)
    if d.size == 0:
        raise QuestbenchError("paired bootstrap needs at least one shared sample")
    delta = 100 * d.sum() / m.sum()
    if d.size < 2 or np.all(d == d[0]) and np.all(m == m[0]):
        return {"delta_pp": float(delta), "ci_low": float(delta), "ci_high": float(delta)}

    def ratio(dd, mm, axis=-1):
        return 100 * dd.sum(axis=axis) / mm.sum(axis=axis)

    res = bootstrap((d, m), ratio, paired=True, vectorized=True, n_resamples=n_boot, method="percentile",
                    batch=max(1, 2_000_000 // d.size), rng=np.random.default_rng(seed))
    return {"delta_pp": float(delta), "ci_low": float(res.confidence_interval.low),
            "ci_high": float(res.confidence_interval.high)}


def sign_flip_test(a_sum: np.ndarray, b_sum: np.ndarray, n_resamples: int = 9999, seed: int = 0) -> float:
    """Two-sided paired permutation test of b - a over images: each image's two models' outcomes are swapped
    at random (a sign flip of its difference), keeping its settings together; exact when 2**images <=
    n_resamples. Same definition as ``scipy.stats.permutation_test(permutation_type="samples")``, which the
    tests use as the oracle; vectorized here because scipy's paired path loops in Python per resample (4.9 s of
    a 13 s comparison at 10,000 images, bench/stats_speed.py)."""
    d = np.asarray(b_sum, float) - np.asarray(a_sum, float)
    d = d[d != 0]  # images whose outcome does not change under a swap add nothing to either side
    if d.size == 0:
        return 1.0
    observed = d.sum()
    tol = 1e-9 * max(1.0, abs(observed))
    if 2 ** d.size <= n_resamples:
        signs = 1 - 2 * ((np.arange(2 ** d.size)[:, None] >> np.arange(d.size)) & 1)
        null = signs @ d
        greater, less, total, plus = (null >= observed - tol).sum(), (null <= observed + tol).sum(), null.size, 0
    else:
        rng = np.random.default_rng(seed)
        greater = less = 0
        chunk = max(1, 4_000_000 // d.size)
        for start in range(0, n_resamples, chunk):
            k = min(chunk, n_resamples - start)
            null = (rng.integers(0, 2, size=(k, d.size), dtype=np.int8) * 2 - 1) @ d
            greater += int((null >= observed - tol).sum())
            less += int((null <= observed + tol).sum())
        total, plus = n_resamples, 1  # the observed arrangement counts as one of the resamples
    return float(min(1.0, 2 * min((greater + plus) / (total + plus), (less + plus) / (total + plus))))


def two_way_bootstrap(d_sum: np.ndarray, m: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """Crossed (pairs x images) percentile bootstrap of the mean delta over trained pairs. Kept only to show, in
    bench/seed_inference_coverage.py, why it is not used: with 3 pairs its limits sit near the smallest and largest
    pair delta (a resample of one pair three times has probability 1/27 > 2.5%) and it covers far below 95%."""
    d_sum = np.asarray(d_sum, float)
    m = np.asarray(m, float)
    n_pairs, n_img = d_sum.shape
    per_pair = 100 * d_sum.sum(1) / m.sum()
    rng = np.random.default_rng(seed)
    stats = []
    chunk = max(1, 2_000_000 // max(n_img, 1))
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        w_img = rng.multinomial(n_img, np.full(n_img, 1 / n_img), size=k)  # (k, images) resampling counts
        w_pair = rng.multinomial(n_pairs, np.full(n_pairs, 1 / n_pairs), size=k) / n_pairs
        deltas = 100 * (w_img @ d_sum.T) / (w_img @ m)[:, None]  # (k, pairs)
        stats.append((deltas * w_pair).sum(1))
    lo, hi = np.percentile(np.concatenate(stats), [2.5, 97.5])
    return {"delta_pp": float(per_pair.mean()), "ci_low": float(lo), "ci_high": float(hi),
            "per_pair": [float(x) for x in per_pair]}


SEED_METHOD = "t, k-1 df (pairs + shared images); p = max(t, exact sign-flip over pairs)"


def sign_flip_over_pairs(deltas: Sequence[float]) -> float:
    """Exact two-sided sign-flip (randomization) test of mean zero over k independent pair deltas: all 2**k
    sign patterns. Its smallest possible p is 2 / 2**k (0.25 at k = 3, 0.0625 at k = 5, 0.031 at k = 6)."""
    d = np.asarray(deltas, float)
    k = d.size
    if k == 0:
        raise QuestbenchError("a sign-flip test needs at least one pair")
    observed = abs(d.sum())
    tol = 1e-9 * max(1.0, observed)
    # every sign pattern's sum: the first 16 pairs' 2**16 sums, shifted by each sum of the remaining pairs (memory
    # stays at 2**16 values, so 20 pairs take a second, not gigabytes)
    low = _signed_sums(d[:16])
    high = _signed_sums(d[16:]) if k > 16 else np.zeros(1)
    extreme = sum(int((np.abs(low + h) >= observed - tol).sum()) for h in high)
    return extreme / 2 ** k


def sign_patterns(k: int) -> np.ndarray:
    """All 2**k sign patterns over k pairs, one per row (+1 / -1)."""
    return 1 - 2 * ((np.arange(2 ** k)[:, None] >> np.arange(k)) & 1)


def _signed_sums(d: np.ndarray) -> np.ndarray:
    return sign_patterns(d.size) @ d


def min_sign_flip_p(k: int) -> float:
    return 2.0 / 2 ** k


def seed_level_inference(x: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """Mean delta over k trained pairs that share n images, with an interval valid at a handful of pairs.

    ``x``: (k pairs, n images) per-image deltas scaled so that ``x[j].mean()`` is pair j's delta (pp). The
    interval is ``seed_interval``'s. The p-value is the larger of that t test's and the exact sign-flip test's
    over the k pair deltas: the sign-flip alone ignores the images the pairs share (it rejects a true zero too
    often when they matter), the t alone can claim p < 0.05 with 3 pairs from a lucky draw of seeds; taking the
    larger, p < 0.05 implies the interval excludes zero and needs k >= 6. Coverage and size are checked by
    simulation (tests/test_seed_inference.py)."""
    from scipy import stats

    x = np.asarray(x, float)
    k, n = x.shape
    per_pair = x.mean(1)
    delta = float(per_pair.mean())
    p_flip = sign_flip_over_pairs(per_pair)
    out = {"delta_pp": delta, "per_pair": [float(v) for v in per_pair], "p_sign_flip": p_flip,
           "n_pairs": k, "n_images": n}
    if k < 2:
        return {**out, "ci_low": math.nan, "ci_high": math.nan, "df": math.nan, "se": math.nan, "p_value": 1.0}
    lo, hi, se, df = seed_interval(x, level)
    p_t = float(2 * stats.t.sf(abs(delta) / se, df)) if se > 0 else float(delta == 0 or math.nan)
    p_t = 0.0 if math.isnan(p_t) else p_t  # no variation at all and a non-zero mean
    return {**out, "ci_low": lo, "ci_high": hi, "df": df, "se": se, "p_t": p_t, "p_value": max(p_t, p_flip)}


def seed_interval(x: np.ndarray, level: float = 0.95, images: bool = True) -> tuple[float, float, float, float]:
    """(low, high, standard error, df) of the mean of ``x`` (k pairs x n shared images, k >= 2).

    Model: x_ij = mu + u_j (pair) + v_i (image, shared by every pair) + w_ij. Var(mean) = s_u^2/k + s_v^2/n +
    s_w^2/(nk) = (MS_pairs + MS_images - MS_resid) / (nk) from the crossed two-way ANOVA mean squares; it is never
    taken below the pairs-only Student t variance MS_pairs / (nk). Student t with k - 1 degrees of freedom.
    ``images=False`` drops the image term: the pairs-only t interval, kept to show by simulation where it fails."""
    from scipy import stats

    x = np.asarray(x, float)
    k, n = x.shape
    per_pair = x.mean(1)
    delta = float(per_pair.mean())
    ms_pairs = n * per_pair.var(ddof=1)
    if n > 1 and images:
        img_means = x.mean(0)
        ms_images = k * img_means.var(ddof=1)
        resid = x - per_pair[:, None] - img_means[None, :] + delta
        ms_resid = (resid ** 2).sum() / ((n - 1) * (k - 1))
    else:
        ms_images = ms_resid = 0.0
    # the image term is added to the variance, never taken from it; the degrees of freedom stay the pairs' k - 1
    # (Satterthwaite's would rise above k - 1 as soon as the image term is non-zero and, with 3 pairs, shrink the
    # t quantile faster than the variance grows: 92.8% coverage against 94.8% in the simulation)
    se = math.sqrt(max(ms_pairs, ms_pairs + ms_images - ms_resid) / (n * k))
    df = float(k - 1)
    half = float(stats.t.ppf(0.5 + level / 2, df) * se) if se > 0 else 0.0
    return delta - half, delta + half, se, df


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of p-values for testing several settings at once (family-wise error)."""
    p = np.asarray(p_values, float)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return [float(x) for x in adjusted]


def sweep_flags(points: Sequence[tuple[float, float]], clean_accuracy: float, tol: float = 1e-9) -> list[str]:
    """Check an eps sweep [(eps, robust accuracy)]: non-increasing in eps; eps = 0 equals clean accuracy."""
    flags = []
    pts = sorted(points)
    for (e0, a0), (e1, a1) in zip(pts, pts[1:]):
        if a1 > a0 + tol:
            flags.append(f"robust accuracy rises from {a0:.4f} at eps={e0:.6g} to {a1:.4f} at eps={e1:.6g}")
    for e, a in pts:
        if e == 0 and abs(a - clean_accuracy) > tol:
            flags.append(f"eps=0 robust accuracy {a:.4f} differs from clean accuracy {clean_accuracy:.4f}")
    return flags
