import math
import random

import numpy as np
import pytest

from questbench import metrics
from questbench.errors import QuestbenchError


def test_alexnet_errors_give_mce_100():
    errs = {c: list(v) for c, v in metrics.alexnet_errors().items()}
    assert metrics.mce(errs) == pytest.approx(100.0)


def test_extras_never_enter_the_mean():
    errs = {c: list(v) for c, v in metrics.alexnet_errors().items()}
    for extra in metrics.EXTRA_CORRUPTIONS:
        errs[extra] = [0.0] * 5
    assert metrics.mce(errs) == pytest.approx(100.0)


def test_mce_matches_the_closed_form_in_any_order_and_is_keyed_by_name():
    import csv
    from pathlib import Path
    # the oracle reads AlexNet's published errors itself: mCE = mean_c 100 * sum_s E_cs / sum_s AlexNet_cs
    ref = Path(__file__).resolve().parents[2] / "shared" / "reference" / "alexnet_imagenet_c_top1_error.csv"
    if not ref.is_file():
        ref = Path(metrics.__file__).parents[1] / "data" / "alexnet_imagenet_c_top1_error.csv"
    rows = list(csv.DictReader(ref.open()))
    alex = {r["corruption"]: [float(r[f"severity_{s}"]) for s in range(1, 6)] for r in rows}
    rnd = random.Random(0)
    errs = {c: [rnd.random() for _ in range(5)] for c in metrics.COMMON_CORRUPTIONS}
    closed = sum(100 * sum(errs[c]) / sum(alex[c]) for c in metrics.COMMON_CORRUPTIONS) / 15
    items = list(errs.items())
    rnd.shuffle(items)
    assert metrics.mce(dict(items)) == pytest.approx(closed, rel=1e-9)
    names = list(errs)
    swapped = {names[(i + 1) % 15]: errs[c] for i, c in enumerate(names)}  # values under the wrong names
    assert metrics.mce(swapped) != pytest.approx(closed, rel=1e-6)


def test_mce_is_keyed_by_name():
    base = metrics.alexnet_errors()
    errs = {c: list(base[c]) for c in metrics.COMMON_CORRUPTIONS}
    errs["gaussian_noise"] = [e / 2 for e in base["gaussian_noise"]]
    assert metrics.mce(errs) == pytest.approx((14 * 100 + 50) / 15)


def test_mce_needs_all_common_corruptions():
    errs = {c: [0.5] * 5 for c in metrics.COMMON_CORRUPTIONS[:-1]}
    with pytest.raises(QuestbenchError, match="jpeg_compression"):
        metrics.mce(errs)


def test_relative_mce_of_alexnet_is_100():
    errs = {c: list(v) for c, v in metrics.alexnet_errors().items()}
    assert metrics.relative_mce(errs, metrics.ALEXNET_CLEAN_ERROR) == pytest.approx(100.0)


def test_unnormalized_mean_corruption_error():
    assert metrics.mean_corruption_error({"a": [0.1] * 5, "b": [0.3] * 5}) == pytest.approx(20.0)


def test_mcnemar_matches_scipy_binomtest_and_closed_form():
    from scipy.stats import binomtest
    rnd = random.Random(1)
    for n, pa, pb in ((40, 0.5, 0.6), (200, 0.7, 0.75), (1000, 0.9, 0.89)):
        a = [rnd.random() < pa for _ in range(n)]
        b = [rnd.random() < pb for _ in range(n)]
        only_a = sum(x and not y for x, y in zip(a, b))
        only_b = sum(y and not x for x, y in zip(a, b))
        r = metrics.mcnemar(a, b)
        assert (r["only_a"], r["only_b"]) == (only_a, only_b)
        # closed form of the exact two-sided test: twice the smaller binomial tail at p = 1/2
        n_disc, low = only_a + only_b, min(only_a, only_b)
        closed = min(1.0, 2 * sum(math.comb(n_disc, i) for i in range(low + 1)) / 2 ** n_disc)
        assert r["p_value"] == pytest.approx(closed, rel=1e-9)
        assert binomtest(only_a, n_disc, 0.5).pvalue == pytest.approx(closed, rel=1e-9)
    # 5 discordant pairs all one way: p = 2 * 0.5**5
    assert metrics.mcnemar([False] * 5 + [True] * 3, [True] * 8)["p_value"] == pytest.approx(0.0625)
    assert metrics.mcnemar([True, False], [True, False])["p_value"] == 1.0


def test_cluster_bootstrap_on_perfectly_correlated_settings_equals_the_per_image_interval():
    rng = np.random.default_rng(0)
    n_img, n_set = 200, 75
    a_img = rng.random(n_img) < 0.6
    b_img = rng.random(n_img) < 0.7
    # every setting of an image has that image's outcome: 15,000 rows that carry only 200 images of information
    ids = np.repeat(np.arange(n_img), n_set)
    a_rows, b_rows = np.repeat(a_img, n_set), np.repeat(b_img, n_set)
    per_row = metrics.cluster_bootstrap(*metrics.per_image_sums(ids, a_rows, b_rows), n_boot=2000, seed=3)
    per_img = metrics.cluster_bootstrap(a_img.astype(float), b_img.astype(float), np.ones(n_img), n_boot=2000,
                                        seed=3)
    assert per_row["ci_low"] == pytest.approx(per_img["ci_low"]) and per_row["ci_high"] == pytest.approx(
        per_img["ci_high"])
    # treating the 15,000 rows as independent would make the interval about sqrt(75) ~ 8.7 times narrower
    naive = metrics.cluster_bootstrap(a_rows.astype(float), b_rows.astype(float), np.ones(a_rows.size),
                                      n_boot=500, seed=3)
    assert (per_row["ci_high"] - per_row["ci_low"]) > 6 * (naive["ci_high"] - naive["ci_low"])


def test_sign_flip_test_matches_scipy_permutation_test():
    from scipy.stats import permutation_test
    rng = np.random.default_rng(7)
    for n in (8, 12):  # exact enumeration on both sides
        a, b = rng.integers(0, 6, n).astype(float), rng.integers(0, 6, n).astype(float)
        ref = permutation_test((a, b), lambda x, y, axis=-1: (y - x).sum(axis=axis), permutation_type="samples",
                               vectorized=True, n_resamples=10**6).pvalue
        ours = metrics.sign_flip_test(a, b, n_resamples=10**6)
        assert ours == pytest.approx(ref, rel=1e-9)
    a, b = rng.integers(0, 6, 300).astype(float), rng.integers(1, 7, 300).astype(float) * 0.97
    ref = permutation_test((a, b), lambda x, y, axis=-1: (y - x).sum(axis=axis), permutation_type="samples",
                           vectorized=True, n_resamples=20000, rng=np.random.default_rng(0)).pvalue
    assert metrics.sign_flip_test(a, b, n_resamples=20000) == pytest.approx(ref, abs=0.01)


def test_sign_flip_test_on_one_setting_agrees_with_mcnemar():
    rng = np.random.default_rng(4)
    a = rng.random(300) < 0.6
    b = rng.random(300) < 0.68
    exact = metrics.mcnemar(a, b)["p_value"]
    perm = metrics.sign_flip_test(a.astype(float), b.astype(float), n_resamples=20000, seed=0)
    assert perm == pytest.approx(exact, abs=0.01)


@pytest.mark.slow
def test_statistics_memory_stays_bounded_on_a_million_rows():
    import tracemalloc
    rng = np.random.default_rng(0)
    n_img, n_set = 10_000, 100
    ids = np.repeat(np.arange(n_img), n_set).astype(str)
    a = rng.random(n_img * n_set) < 0.7
    b = rng.random(n_img * n_set) < 0.72
    tracemalloc.start()
    sums = metrics.per_image_sums(ids, a, b)
    metrics.cluster_bootstrap(*sums, n_boot=2000)
    metrics.sign_flip_test(sums[0], sums[1], n_resamples=1999)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # a row-level bootstrap index array would be 2000 x 1,000,000 x 8 bytes = 16 GB
    assert peak < 150 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def test_two_way_bootstrap_includes_seed_variation():
    rng = np.random.default_rng(5)
    n_img = 400
    base = (rng.random(n_img) < 0.1).astype(float) - (rng.random(n_img) < 0.05).astype(float)
    m = np.ones(n_img)
    same = metrics.two_way_bootstrap(np.stack([base, base, base]), m, seed=1)
    one = metrics.cluster_bootstrap(np.zeros(n_img), base, m, seed=1)
    assert same["delta_pp"] == pytest.approx(one["delta_pp"])
    assert (same["ci_high"] - same["ci_low"]) == pytest.approx(one["ci_high"] - one["ci_low"], rel=0.2)
    # pairs that disagree by +-6 pp: the interval must widen well beyond the images-only one
    spread = np.stack([base + (rng.random(n_img) < s) for s in (0.0, 0.06, 0.12)])
    wide = metrics.two_way_bootstrap(spread, m, seed=1)
    assert wide["per_pair"][2] - wide["per_pair"][0] > 9
    assert (wide["ci_high"] - wide["ci_low"]) > 1.5 * (one["ci_high"] - one["ci_low"])


def test_holm_closed_form():
    # sorted p: 0.01 (x4 = 0.04), 0.03 (x3 = 0.09), 0.04 (x2 = 0.08 -> monotone 0.09), 0.5 (x1)
    assert metrics.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert metrics.holm([0.9, 0.2]) == pytest.approx([0.9, 0.4])  # 0.2 x 2; then max(0.4, 0.9 x 1)
    assert metrics.holm([0.3]) == [0.3]


def test_wilson_interval_matches_scipy():
    from scipy.stats import binomtest
    for k, n in ((90, 100), (0, 16), (16, 16), (1234, 2000)):
        ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        lo, hi = metrics.wilson_interval(k, n)
        assert lo == pytest.approx(ref.low, abs=2e-4) and hi == pytest.approx(ref.high, abs=2e-4)
