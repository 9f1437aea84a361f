"""Calibration under shift (questbench/kinds/calibration.py), checked against closed forms and independent
computations (numpy.array_split bins, torch's cross_entropy, a one-hot Brier score), and end to end in a run."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import questbench
from questbench.kinds.calibration import _paired, expected_calibration_error, probability_fields
from questbench.report.leaderboard import leaderboard
from questbench.report.tidy import render_csv
from questbench.run.runner import run_suite
from questbench.config.suite import load_suite

from conftest import write_suite


def ece_by_array_split(conf, correct, bins):
    """The definition, written out: sort by confidence, numpy.array_split into equal-count bins, weighted gaps."""
    order = np.argsort(conf, kind="stable")
    total = 0.0
    for b in np.array_split(order, bins):
        if len(b):
            total += len(b) / len(conf) * abs(np.mean(correct[b]) - np.mean(conf[b]))
    return total


@pytest.mark.parametrize("c, acc", [(0.9, 0.6), (0.3, 0.3), (0.55, 1.0)])
def test_ece_of_one_confidence_is_its_gap_to_accuracy(c, acc):
    """Equal confidences are one to the binning: whatever order the correct images come in (a naive cut of the
    sorted run into equal-count bins would give 0.409 for the first case: correct images first)."""
    n = 200
    correct = np.arange(n) < acc * n
    for order in (correct, correct[::-1], np.random.default_rng(0).permutation(correct)):
        assert expected_calibration_error(np.full(n, c), order, 15) == pytest.approx(abs(acc - c))
    # two tie groups in a batch of resamples (4 bins of 50: none straddles the groups)
    conf = np.stack([np.full(n, c), np.r_[np.full(n // 2, 0.2), np.full(n // 2, 0.7)]])
    corr = np.stack([correct, np.arange(n) % 4 == 0])  # second row: 25% correct in each group
    np.testing.assert_allclose(expected_calibration_error(conf, corr, 4), [abs(acc - c), 0.5 * 0.05 + 0.5 * 0.45])


def test_ece_by_hand_and_against_the_definition():
    conf = np.arange(1, 11) / 10
    correct = np.array([0, 0, 1, 0, 0, 1, 1, 1, 0, 1])
    # bins {0.1..0.5}: accuracy 0.2, confidence 0.3; {0.6..1.0}: 0.8 and 0.8 -> 0.5 * 0.1
    assert expected_calibration_error(conf, correct, 2) == pytest.approx(0.05)
    rng = np.random.default_rng(0)
    for n, bins in [(103, 15), (15, 15), (7, 15), (1000, 15), (64, 4)]:
        conf = rng.uniform(0.1, 1, n)
        correct = rng.uniform(size=n) < conf ** 2
        assert expected_calibration_error(conf, correct, bins) == pytest.approx(
            ece_by_array_split(conf, correct, min(bins, n)), abs=1e-12)
    # leading axes are independent problems
    conf, correct = rng.uniform(size=(3, 50)), rng.uniform(size=(3, 50)) < 0.5
    np.testing.assert_allclose(expected_calibration_error(conf, correct, 15),
                               [ece_by_array_split(c, k, 15) for c, k in zip(conf, correct)])


def test_per_image_fields_match_torch_and_a_one_hot_brier():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 10, generator=g) * 4
    labels = torch.randint(0, 10, (64,), generator=g)
    rows = probability_fields(logits, labels)
    p = torch.softmax(logits.double(), 1).numpy()
    onehot = np.eye(10)[labels.numpy()]
    np.testing.assert_allclose([r["nll"] for r in rows], F.cross_entropy(logits.double(), labels, reduction="none"),
                               rtol=1e-12)
    np.testing.assert_allclose([r["confidence"] for r in rows], p.max(1), rtol=1e-12)
    np.testing.assert_allclose([r["p_true"] for r in rows], p[np.arange(64), labels.numpy()], rtol=1e-12)
    np.testing.assert_allclose([r["brier"] for r in rows], ((p - onehot) ** 2).sum(1), rtol=1e-10)
    # a masked logit (a shift's protocol) is a class with probability 0, never NaN
    masked = logits.masked_fill(torch.arange(10) >= 5, float("-inf"))
    rows = probability_fields(masked, labels.clamp(max=4))
    assert all(np.isfinite([r["nll"], r["brier"], r["confidence"]]).all() for r in rows)


def _frame(model, conf, correct):
    n = len(conf)
    return pd.DataFrame({"model": model, "sample_id": [f"i{i}" for i in range(n)], "setting": "clean",
                         "confidence": conf, "correct": correct.astype(float), "nll": -np.log(conf),
                         "brier": (1 - conf) ** 2})


def test_paired_interval_finds_an_overconfident_model_and_not_a_copy():
    rng = np.random.default_rng(1)
    n = 600
    conf = rng.uniform(0.5, 1, n)
    correct = rng.uniform(size=n) < conf  # calibrated by construction
    base = _frame("a", conf, correct)
    over = _frame("b", np.minimum(conf + 0.15, 0.999), correct)  # same predictions, 15 pp too confident
    d = _paired(base, over, 15)
    assert d["ece"][1] > 5 and d["ece"][0] == pytest.approx(
        100 * (expected_calibration_error(over.confidence, correct, 15)
               - expected_calibration_error(conf, correct, 15)))
    same = _paired(base, base.assign(model="b"), 15)
    assert same["ece"] == (0.0, 0.0, 0.0) and same["nll"] == (0.0, 0.0, 0.0)


SUITE = """
name = "calib"
models = ["tiny-std", "tiny-quest"]
seed = 1
batch_size = 16
num_workers = 0
[data]
dataset = "fashion-mnist"
samples = 20
[corruptions]
names = ["gaussian_noise", "contrast"]
severities = [2]
samples = 12
[calibration]
bins = 4
"""


@pytest.mark.slow
def test_a_run_with_calibration(tmp_path, tiny_pair):
    out = tmp_path / "out"
    summary = run_suite(load_suite(str(write_suite(tmp_path, tiny_pair, SUITE))), out, device="cpu", quiet=True)
    assert summary.jobs_run == 2 * (1 + 2) * 2  # clean and corruption jobs, and their calibration twins
    s = questbench.load_results(out).samples
    cal = s[s.evaluation == "calibration"]
    assert len(cal) == 2 * (20 + 2 * 12) and cal[["confidence", "p_true", "nll", "brier"]].notna().all().all()
    # the same forward passes as the accuracy jobs: identical predictions, setting by setting
    for ev, setting in [("clean", "clean"), ("corruption", "contrast/2")]:
        a = s[(s.evaluation == ev) & (s.setting == setting)].set_index(["model", "sample_id"]).pred
        b = cal[cal.setting == setting].set_index(["model", "sample_id"]).pred
        assert a.sort_index().equals(b.sort_index())
    csv = pd.read_csv(pd.io.common.StringIO(render_csv(questbench.load_results(out))))
    ece = csv[csv.table == "ECE"]
    g = cal[(cal.model == "tiny-quest") & (cal.setting == "contrast/2")]
    row = ece[(ece.model == "tiny-quest") & (ece.setting == "contrast/2")]
    assert row.error_pct.item() == pytest.approx(100 * ece_by_array_split(g.confidence.to_numpy(),
                                                                          g.correct.to_numpy(), 4), abs=1e-6)
    pair = ece[(ece.model == "tiny-quest") & (ece.baseline == "tiny-std")]
    assert list(pair.evaluation) == ["clean", "corruption"] and list(pair.setting) == ["clean", "all"]
    assert (pair.delta_ci_low_pp <= pair.delta_pp).all() and (pair.delta_pp <= pair.delta_ci_high_pp).all()
    md = leaderboard(out, "md", str(tmp_path / "lb.md"))
    assert "## Calibration under shift" in md and "## Calibration: model minus its standard sibling" in md
    assert "corruptions (mean of 2 settings)" in md
    assert md.index("| tiny-quest | tiny-std | clean |") < md.index("| tiny-quest | tiny-std | corruptions |")
    # a record whose probabilities contradict each other is refused (and the digest would refuse any edit)
    from questbench.kinds.calibration import _consistent
    r = cal.iloc[0].to_dict()
    assert _consistent(r | {"correct": bool(r["correct"])})
    assert not _consistent(r | {"p_true": min(1.0, r["confidence"] + 0.1)})


@pytest.mark.slow
def test_calibration_takes_its_rows_from_the_accuracy_forward_passes(tmp_path, tiny_pair, monkeypatch):
    """With clean and corruption jobs in the run, calibration runs no forward pass of its own (its jobs take no
    time) and its rows equal those of a run in which it computes every one itself."""
    import json

    import questbench.run.runner as runner

    suite = load_suite(str(write_suite(tmp_path, tiny_pair, SUITE)))
    shared, alone = tmp_path / "shared", tmp_path / "alone"
    run_suite(suite, shared, device="cpu", quiet=True)
    monkeypatch.setattr(runner, "derived_for", lambda work: [])
    run_suite(suite, alone, device="cpu", quiet=True)

    def calibration_jobs(out):
        docs = [json.loads(p.read_text()) for p in sorted((out / "jobs").glob("*__calibration__*.json"))]
        return {d["job"]["key_sha256"]: d for d in docs}

    a, b = calibration_jobs(shared), calibration_jobs(alone)
    assert len(a) == 6 and a.keys() == b.keys()
    assert all(a[k]["records"] == b[k]["records"] for k in a)
    assert all(d["job"]["wall_s"] == 0 for d in a.values()) and all(d["job"]["wall_s"] > 0 for d in b.values())
    for out in (shared, alone):  # the accuracy jobs' rows stay as they are
        for p in [*(out / "jobs").glob("*__clean__*.json"), *(out / "jobs").glob("*__corruption__*.json")]:
            assert set(json.loads(p.read_text())["records"][0]) == {"sample_id", "label", "pred", "correct"}


def test_the_resampled_ece_by_counts_equals_sorting_each_resample():
    """The bootstrap's ECE reads each resample's bins off counts over one sort per setting; it must equal the
    definition applied to the resampled arrays, ties (saturated confidences) and bins cutting through copies of one
    image included."""
    from questbench.kinds.calibration import _SortedSettings

    rng = np.random.default_rng(3)
    for trial in range(40):
        settings, n, bins = rng.integers(1, 5), rng.integers(2, 90), rng.integers(1, 18)
        conf = rng.uniform(0.2, 1, (settings, n))
        if trial % 2:
            conf = np.round(conf * 4) / 4  # a handful of tie groups per setting
        correct = rng.uniform(size=(settings, n)) < conf
        draws = rng.integers(0, n, (6, n))
        counts = np.stack([np.bincount(d, minlength=n) for d in draws])
        want = np.array([[ece_by_array_split(c[d], k[d], min(bins, n)) if trial % 2 == 0 else
                          expected_calibration_error(c[d], k[d], bins) for c, k in zip(conf, correct)]
                         for d in draws])
        np.testing.assert_allclose(_SortedSettings(conf, correct, bins).ece(counts), want, atol=1e-12, rtol=0)
