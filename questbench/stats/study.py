"""A study's conclusions over trained pairs: contrasts between attention kinds, the factorial view of key and
query normalization, and a verdict per endpoint (better, worse, equivalent within a margin, or inconclusive)
beside the smallest effect the study could detect.

Every contrast is a weighted sum of kind-minus-standard deltas taken within one seed (the pairs of a seed share
their standard model, which cancels from a kind-against-kind contrast), so it is inferred exactly like a kind
against standard: per seed a per-image delta, then ``metrics.seed_level_inference`` over the seeds.
"""
from __future__ import annotations

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


def detectable_effect(se: float, df: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true effect a two-sided t test at ``alpha`` detects with probability ``power``, given the
    standard error the study observed: (t_{1-alpha/2} + t_{power}) * se with the study's degrees of freedom."""
    from scipy import stats

    if not (se > 0 and df >= 1):
        return math.nan
    return float((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * se)


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
                    "detectable_pp": detectable_effect(r["se"], r["df"], alpha),
                    "verdict": verdict(r["delta_pp"], r["ci_low"], r["ci_high"], ph, pe, margin, alpha)})
    return out
