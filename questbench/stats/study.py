"""A study's conclusions over trained pairs: contrasts between attention kinds, the factorial view of key and
query normalization, and a verdict per endpoint (better, worse, equivalent within a margin, or inconclusive)
beside the smallest effect the study could detect.

Every contrast is a weighted sum of kind-minus-standard deltas taken within one seed (the pairs of a seed share
their standard model, which cancels from a kind-against-kind contrast), so it is inferred exactly like a kind
against standard: per seed a per-image delta, then ``metrics.seed_level_inference`` over the seeds.
"""
from __future__ import annotations

import functools
import math
from itertools import combinations
from typing import Optional, Sequence

from .metrics import holm

ALPHA = 0.05
POWER = 0.8

# which of the two operations each kind applies before the softmax (standard: neither)
KEYS_NORMALIZED = ("quest", "qknorm_hs")
QUERIES_NORMALIZED = ("qnorm", "qknorm_hs")
FACTORIAL_KINDS = ("quest", "qnorm", "qknorm_hs")  # with standard: the four cells of the 2 x 2

# weights on (kind - standard) deltas; standard's own weight is implied (its delta is zero)
FACTORIAL = {
    # mean over query states of (keys normalized - keys not): ((quest - std) + (qknorm_hs - qnorm)) / 2
    "key normalization (main effect)": {"quest": 0.5, "qknorm_hs": 0.5, "qnorm": -0.5},
    # mean over key states of (queries normalized - not): ((qnorm - std) + (qknorm_hs - quest)) / 2
    "query normalization (main effect)": {"qnorm": 0.5, "qknorm_hs": 0.5, "quest": -0.5},
    # does normalizing keys help more once queries are normalized: (qknorm_hs - qnorm) - (quest - std)
    "key x query interaction": {"qknorm_hs": 1.0, "qnorm": -1.0, "quest": -1.0},
}
FACTORIAL_NOTE = ("The four kinds are not a clean 2 x 2: standard scales logits by 1/sqrt(d), QUEST and QNorm "
                  "by 1, QKNorm-HS by a learned per-head scale, so each main effect mixes normalization with a "
                  "change of logit scale.")


def kind_contrasts(kinds: Sequence[str]) -> dict[str, dict[str, float]]:
    """Every kind against every other kind (their deltas against standard subtracted), in a stable order."""
    return {f"{a} - {b}": {a: 1.0, b: -1.0} for a, b in combinations(sorted(kinds), 2)}


def factorial_contrasts(kinds: Sequence[str]) -> dict[str, dict[str, float]]:
    """The main effects and interaction, when the results hold all four kinds."""
    return dict(FACTORIAL) if set(FACTORIAL_KINDS) <= set(kinds) else {}


def detectable_effect(se: float, k: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true effect that the seed-level test (``metrics.seed_level_inference``: p = the larger of a t
    test's with k - 1 df and the exact sign-flip test's over the k pairs) rejects at ``alpha`` with probability
    ``power``, given the standard error the study observed; inf when no effect can be detected (the sign-flip
    floor 2 / 2**k is not below ``alpha``: 5 pairs at 0.05, or 6 pairs at Holm's 0.05 / 3).

    Model: k pair deltas drawn independently from a normal with the spread that gives the observed ``se``. Both
    tests are free of scale, so the effect is a multiple of ``se`` that depends on k, ``alpha`` and ``power``
    only (``_detectable_in_se``). A t test alone would claim, say, 1.4 pp at 5 pairs where the test in use cannot
    reject at all."""
    if not (se > 0 and k >= 2):
        return math.nan
    return _detectable_in_se(int(k), float(alpha), float(power)) * se


N_POWER_DRAWS = 4000
_MAX_EXACT_PAIRS = 12  # beyond, the sign-flip p of each draw is estimated from 4,096 random sign patterns


@functools.cache
def _detectable_in_se(k: int, alpha: float, power: float) -> float:
    """The effect, in standard errors of the mean, at which the combined test's power is ``power``: bisection
    on one fixed set of normal draws (common random numbers, so the power rises with the effect and the answer
    is reproducible)."""
    import numpy as np
    from scipy import stats

    from .metrics import min_sign_flip_p, sign_patterns

    if min_sign_flip_p(k) >= alpha:
        return math.inf
    rng = np.random.default_rng(20261207)
    z = rng.standard_normal((N_POWER_DRAWS, k))
    if k <= _MAX_EXACT_PAIRS:
        signs = sign_patterns(k)
    else:
        signs = rng.choice([-1.0, 1.0], size=(4096, k))
        signs[0] = 1.0  # the observed pattern belongs to the reference set
    signs = signs.astype(float)
    crit = stats.t.ppf(1 - alpha / 2, k - 1)

    def rejected(effect_in_sd: float) -> float:
        d = z + effect_in_sd
        mean, sd = d.mean(1), d.std(1, ddof=1)
        t_ok = np.abs(mean) / (sd / math.sqrt(k)) > crit
        observed = np.abs(d.sum(1))
        p_flip = (np.abs(d @ signs.T) >= observed[:, None] * (1 - 1e-9)).mean(1)
        return float((t_ok & (p_flip < alpha)).mean())

    lo, hi = 0.0, 1.0
    while rejected(hi) < power:
        lo, hi = hi, 2 * hi
        if hi > 1e3:
            return math.inf
    for _ in range(16):  # the bracket to 1/65,536 of its width: far below the draws' own noise
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if rejected(mid) >= power else (mid, hi)
    return hi * math.sqrt(k)  # in pair standard deviations -> in standard errors of the mean


def tost_p(delta: float, se: float, df: float, margin: float) -> float:
    """Two one-sided t tests of |effect| < margin: the larger of the two one-sided p-values (equivalence is shown
    at level alpha when it is below alpha, i.e. when the 1 - 2 alpha interval lies inside +-margin)."""
    from scipy import stats

    if not (margin > 0) or not (df >= 1):
        return math.nan
    if se <= 0:
        return 0.0 if abs(delta) < margin else 1.0
    p_low = stats.t.sf((delta + margin) / se, df)  # H0: effect <= -margin
    p_high = stats.t.cdf((delta - margin) / se, df)  # H0: effect >= +margin
    return float(max(p_low, p_high))


def verdict(delta: float, ci_low: float, ci_high: float, p_holm: float, p_equiv_holm: float,
            margin: Optional[float], alpha: float = ALPHA) -> str:
    """better / worse: the difference test rejects after Holm and the interval excludes zero; equivalent: the
    two one-sided tests reject after Holm (needs a declared margin); else inconclusive."""
    if p_holm < alpha and (ci_low > 0 or ci_high < 0):
        return "better" if delta > 0 else "worse"
    if margin is not None and p_equiv_holm < alpha:
        return f"equivalent within +-{margin:g} pp"
    return "inconclusive"


def conclude(rows: list[dict], margin: Optional[float], alpha: float = ALPHA) -> list[dict]:
    """Verdicts for one family of endpoints (rows carrying delta_pp, ci_low, ci_high, se, df, p_value): Holm
    across the family for the difference tests and, separately, for the equivalence tests."""
    p_diff = holm([r["p_value"] for r in rows]) if rows else []
    p_eq_raw = [tost_p(r["delta_pp"], r["se"], r["df"], margin) if margin else math.nan for r in rows]
    p_eq = holm([1.0 if math.isnan(p) else p for p in p_eq_raw]) if rows else []
    out = []
    for r, ph, pe, pe_raw in zip(rows, p_diff, p_eq, p_eq_raw):
        out.append({**r, "p_holm": ph, "p_equivalence": pe_raw, "p_equivalence_holm": pe if margin else math.nan,
                    # at Holm's first step (alpha / family size): what the test must reach whatever the others
                    "detectable_pp": detectable_effect(r["se"], r["n_pairs"], alpha / len(rows)),
                    "verdict": verdict(r["delta_pp"], r["ci_low"], r["ci_high"], ph, pe, margin, alpha)})
    return out
