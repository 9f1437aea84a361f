import random

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


def test_order_of_mapping_does_not_matter():
    rnd = random.Random(0)
    errs = {c: [rnd.random() for _ in range(5)] for c in metrics.COMMON_CORRUPTIONS}
    items = list(errs.items())
    rnd.shuffle(items)
    assert metrics.mce(dict(items)) == pytest.approx(metrics.mce(errs))


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


def test_mcnemar_and_bootstrap():
    a = [True] * 50 + [False] * 50
    b = [True] * 50 + [True] * 20 + [False] * 30
    r = metrics.mcnemar(a, b)
    assert r["only_a"] == 0 and r["only_b"] == 20 and r["p_value"] < 1e-5
    assert metrics.mcnemar(a, a)["p_value"] == 1.0
    bs = metrics.paired_bootstrap(a, b, n_boot=500)
    assert bs["delta_pp"] == pytest.approx(20.0) and bs["ci_low"] > 0


def test_wilson_interval_contains_estimate():
    lo, hi = metrics.wilson_interval(90, 100)
    assert lo < 0.9 < hi and 0 <= lo and hi <= 1
