"""Seed-level inference over a handful of trained pairs: coverage and size by simulation with a known answer,
the sign-flip test against scipy, the t interval against its closed form."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from questbench.stats.metrics import min_sign_flip_p, seed_level_inference, sign_flip_over_pairs, two_way_bootstrap
from questbench.stats.simulate import pair_study

STUDIES = 2000  # Monte Carlo SE of a 95% coverage: 0.49 pp
TRUE_DELTA_PP = 2.0


@pytest.mark.parametrize("k", [3, 5, 10])
@pytest.mark.slow
def test_interval_covers_the_true_mean_and_the_test_keeps_its_size(k):
    rng = np.random.default_rng(1000 + k)
    covered = rejected = 0
    for _ in range(STUDIES):
        r = seed_level_inference(pair_study(rng, k, 1000, TRUE_DELTA_PP / 100))
        covered += r["ci_low"] <= TRUE_DELTA_PP <= r["ci_high"]
        rejected += seed_level_inference(pair_study(rng, k, 1000, 0.0))["p_value"] < 0.05
    assert 0.93 <= covered / STUDIES <= 0.97
    assert rejected / STUDIES <= 0.05


@pytest.mark.slow
def test_the_crossed_bootstrap_fails_the_same_simulation_at_three_pairs():
    """The oracle above can fail: the pairs x images bootstrap that questbench used before covers far less."""
    rng = np.random.default_rng(7)
    covered = 0
    n = 300
    for s in range(n):
        x = pair_study(rng, 3, 1000, TRUE_DELTA_PP / 100)
        r = two_way_bootstrap(x / 100, np.ones(x.shape[1]), n_boot=400, seed=s)
        covered += r["ci_low"] <= TRUE_DELTA_PP <= r["ci_high"]
    assert covered / n < 0.90


def test_sign_flip_over_pairs_matches_scipy_permutation_test():
    rng = np.random.default_rng(3)
    for k in (3, 5, 7):
        d = rng.normal(0.5, 1.0, k)
        ref = stats.permutation_test((d,), np.mean, permutation_type="samples", alternative="two-sided",
                                     n_resamples=np.inf).pvalue
        assert sign_flip_over_pairs(d) == pytest.approx(ref)
    assert sign_flip_over_pairs([0.47, 3.68, 1.68]) == pytest.approx(0.25) == min_sign_flip_p(3)
    assert min_sign_flip_p(5) > 0.05 > min_sign_flip_p(6)


def test_three_pairs_without_image_variation_give_the_student_t_interval():
    # the figures: per-pair deltas +0.47, +3.68, +1.68 pp -> t interval -2.1 to +6.0 with 2 df
    deltas = np.array([0.47, 3.68, 1.68])
    x = np.repeat(deltas[:, None], 50, axis=1)  # every image the same delta: no image term
    r = seed_level_inference(x)
    half = stats.t.ppf(0.975, 2) * deltas.std(ddof=1) / np.sqrt(3)
    assert r["ci_low"] == pytest.approx(deltas.mean() - half) and r["ci_high"] == pytest.approx(deltas.mean() + half)
    assert round(r["ci_low"], 1) == -2.1 and round(r["ci_high"], 1) == 6.0
    assert r["p_value"] >= 0.25 and r["df"] == 2


def test_shared_image_variation_widens_the_interval():
    rng = np.random.default_rng(11)
    k, n = 4, 400
    pair_part = rng.normal(0, 1, k)[:, None]
    image_part = rng.normal(0, 30, n)[None, :]  # large effects shared by every pair
    x = 2 + pair_part + image_part + rng.normal(0, 1, (k, n))
    r = seed_level_inference(x)
    only_pairs = stats.t.ppf(0.975, k - 1) * x.mean(1).std(ddof=1) / np.sqrt(k)
    assert (r["ci_high"] - r["ci_low"]) / 2 > 2 * only_pairs


@pytest.mark.parametrize("kind", ["clean", "attack 8/255"])
def test_coverage_with_two_way_discordance_and_image_effects_that_matter(kind):
    """Outcomes that disagree both ways at the committed runs' rates, and image effects shared by every pair:
    the shipped interval covers 93-98.5% at 5, 10 and 20 pairs (issue 35). Measured over 4,000 studies each:
    clean 95.3 / 94.7 / 94.5%, attack 8/255 97.3 / 96.3 / 95.7% - conservative at few pairs under attack, where
    images disagree most; the band's top sits 2 standard errors of 1,000 studies above 97.3%. The seed is fixed
    (str hash() is salted per process: the test drew another sample on every run, and failed on some)."""
    import zlib

    from questbench.stats.metrics import seed_interval
    from questbench.stats.simulate import DISCORDANCE, discordant_pair_study

    rng = np.random.default_rng(zlib.crc32(kind.encode()))
    d = DISCORDANCE[kind]
    x = discordant_pair_study(rng, 10, 1000, 0.01, d)
    assert (x != 0).mean() == pytest.approx(d, abs=0.01) and (x > 0).any() and (x < 0).any()
    for k in (5, 10, 20):
        studies = 1000
        covered = sum(lo <= 1.0 <= hi for lo, hi, _, _ in
                      (seed_interval(discordant_pair_study(rng, k, 1000, 0.01, d)) for _ in range(studies)))
        assert 0.93 <= covered / studies <= 0.985, (k, covered / studies)


def test_the_pairs_only_interval_fails_where_the_image_term_matters():
    """The oracle can fail: without the shared-image term (the pairs-only t interval) coverage at 20 pairs falls
    to ~86% under the attack discordance, so deleting the image term from seed_interval fails this test."""
    from questbench.stats.metrics import seed_interval
    from questbench.stats.simulate import DISCORDANCE, discordant_pair_study

    rng = np.random.default_rng(20)
    studies = 1000
    shipped = pairs_only = 0
    for _ in range(studies):
        x = discordant_pair_study(rng, 20, 1000, 0.01, DISCORDANCE["attack 8/255"])
        lo, hi, _, _ = seed_interval(x)
        shipped += lo <= 1.0 <= hi
        lo, hi, _, _ = seed_interval(x, images=False)
        pairs_only += lo <= 1.0 <= hi
    assert pairs_only / studies < 0.91 and shipped / studies >= 0.93


def test_size_at_ten_pairs_with_two_way_discordance():
    """At 10 pairs the sign-flip floor (0.002) is far below 0.05, so this size check can fail."""
    from questbench.stats.simulate import DISCORDANCE, discordant_pair_study

    rng = np.random.default_rng(10)
    studies = 1000
    rejected = sum(seed_level_inference(discordant_pair_study(rng, 10, 1000, 0.0, DISCORDANCE["attack 8/255"]))
                   ["p_value"] < 0.05 for _ in range(studies))
    assert rejected / studies <= 0.06
    assert min_sign_flip_p(10) < 0.005
