"""Verdicts of a study (issue 35): better / worse after Holm, equivalent within a declared margin by two
one-sided tests, else inconclusive; the smallest detectable effect under the test in use (t and exact sign-flip), against simulation."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, stats

from questbench.stats.study import conclude, detectable_effect, tost_p, verdict


def test_tost_rejects_exactly_when_the_90_percent_interval_lies_inside_the_margin():
    rng = np.random.default_rng(0)
    for _ in range(200):
        delta, se, df, margin = rng.normal(0, 1), rng.uniform(0.1, 1), int(rng.integers(2, 20)), rng.uniform(0.2, 2)
        lo, hi = delta - stats.t.ppf(0.95, df) * se, delta + stats.t.ppf(0.95, df) * se
        assert (tost_p(delta, se, df, margin) < 0.05) == (-margin < lo and hi < margin)


def test_tost_keeps_its_size_at_the_margin():
    """Simulated studies of 10 pairs whose true effect sits exactly on the margin: 'equivalent' at most 5%."""
    rng = np.random.default_rng(1)
    k, margin, hits = 10, 1.0, 0
    for _ in range(4000):
        x = rng.normal(margin, 1.5, k)
        hits += tost_p(x.mean(), x.std(ddof=1) / math.sqrt(k), k - 1, margin) < 0.05
    assert hits / 4000 <= 0.06


@pytest.mark.parametrize("k,alpha", [(7, 0.05 / 3), (10, 0.05), (10, 0.05 / 3), (13, 0.05)])
def test_detectable_effect_has_80_percent_power_under_the_test_in_use(k, alpha):
    """Oracle: studies simulated at the printed effect and tested by the production seed-level test (p = the
    larger of the t test's and the exact sign-flip test's) reject in about 80% of them."""
    from questbench.stats.metrics import seed_level_inference

    rng = np.random.default_rng(5)
    sd = 1.3
    se = sd / math.sqrt(k)
    mde = detectable_effect(se, k, alpha)
    studies = 600 if k > 12 else 1500
    hits = sum(seed_level_inference(rng.normal(mde, sd, (k, 1)))["p_value"] < alpha for _ in range(studies))
    assert 0.8 - 3.5 * 0.0103 * math.sqrt(1500 / studies) <= hits / studies <= 0.8 + 3.5 * 0.0103 * math.sqrt(
        1500 / studies), (k, alpha, hits / studies)


def test_the_sign_flip_floor_decides_the_detectable_effect_at_few_pairs():
    """At 5 pairs (or 6 at Holm's 0.05 / 3) no p below the level is possible: nothing is detectable. At 7 pairs
    and 0.05 / 3 the sign-flip test rejects only when all 7 deltas share a sign, so 80% power needs
    P(delta > 0) >= 0.8 ** (1 / 7): an effect of at least 1.86 pair standard deviations, more than the t test
    alone would need (its noncentral-t answer is about 1.6)."""
    assert detectable_effect(1.0, 5, 0.05) == math.inf
    assert detectable_effect(1.0, 6, 0.05 / 3) == math.inf
    assert math.isfinite(detectable_effect(1.0, 6, 0.05))
    k, sd = 7, 2.0
    floor = stats.norm.ppf(0.8 ** (1 / k)) * sd
    crit = stats.t.ppf(1 - 0.05 / 6, k - 1)
    t_only = optimize.brentq(lambda e: stats.nct(k - 1, e / (sd / math.sqrt(k))).sf(crit) - 0.8, 0.01, 10 * sd)
    mde = detectable_effect(sd / math.sqrt(k), k, 0.05 / 3)
    assert mde >= floor > t_only
    assert math.isnan(detectable_effect(0.0, 7))


def test_verdicts():
    assert verdict(2.0, 0.5, 3.5, 0.01, 1.0, 1.0) == "better"
    assert verdict(-2.0, -3.5, -0.5, 0.01, 1.0, 1.0) == "worse"
    assert verdict(0.1, -0.5, 0.7, 0.7, 0.01, 1.0) == "equivalent within +-1 pp"
    assert verdict(0.1, -0.5, 0.7, 0.7, 0.01, None) == "inconclusive"
    assert verdict(2.0, -0.1, 4.1, 0.06, 0.9, 1.0) == "inconclusive"
    # a Holm-adjusted p above alpha is not a finding even if the raw interval excludes zero
    assert verdict(1.0, 0.1, 1.9, 0.09, 0.9, 1.0) == "inconclusive"


def test_conclude_applies_holm_across_the_family():
    rows = [{"delta_pp": d, "ci_low": d - 1, "ci_high": d + 1, "se": 0.4, "df": 9.0, "n_pairs": 10, "p_value": p}
            for d, p in ((2.0, 0.02), (1.5, 0.03), (0.0, 0.9))]
    out = conclude(rows, margin=1.5)
    assert [r["p_holm"] for r in out] == pytest.approx([0.06, 0.06, 0.9])
    assert [r["verdict"] for r in out] == ["inconclusive", "inconclusive", "equivalent within +-1.5 pp"]
    # at Holm's first step: 0.05 / 3 for a family of three endpoints
    assert all(r["detectable_pp"] == pytest.approx(detectable_effect(0.4, 10, 0.05 / 3)) for r in out)
    assert detectable_effect(0.4, 10, 0.05 / 3) > detectable_effect(0.4, 10, 0.05)


def _seed_registry(folder, seeds=3):
    """Standard and QUEST tiny ViTs for ``seeds`` seeds (each pair shares its weights, as the zoo's recipe shares
    the initialization), with a registry pairing each QUEST model with the standard model of its seed."""
    from conftest import TINY, make_tiny
    from questbench.models.attention import set_attention
    from questbench.models.build import save_checkpoint

    lines = []
    for s in range(seeds):
        for kind in ("standard", "quest"):
            m = make_tiny("standard", seed=s)
            if kind == "quest":
                set_attention(m.net, "quest")
                m.spec.attention = "quest"
            name = f"{kind}-s{s}"
            save_checkpoint(m, folder / f"{name}.safetensors")
            pair = f"quest-s{s}" if kind == "standard" else f"standard-s{s}"
            lines += ["[[model]]", f'name = "{name}"', f'arch = "{TINY["arch"]}"', f'attention = "{kind}"',
                      f'source = "path:{name}.safetensors"', "num_classes = 10", "input_size = [1, 28, 28]",
                      "mean = [0.5]", "std = [0.5]", f'pair = "{pair}"',
                      'arch_kwargs = { patch_size = 7, embed_dim = 32, depth = 2, num_heads = 2 }', ""]
    reg = folder / "registry.toml"
    reg.write_text("\n".join(lines))
    return reg


STUDY_SUITE = """
seed = 1
batch_size = 16
num_workers = 0
[data]
samples = 32
[[attacks]]
attack = "fgsm"
eps = [0, "4/255", "8/255"]
[study]
primary = ["clean", "attacks[0] 8/255"]
margin_pp = 5.0
"""


@pytest.mark.slow
def test_a_declared_study_opens_the_page_with_its_verdicts(tmp_path):
    from questbench.config.suite import parse_suite
    from questbench.report.markdown import render_markdown
    from questbench.report.tables import compute_tables
    from questbench.run.runner import run_suite
    from questbench.store.results import load_results

    reg = _seed_registry(tmp_path)
    models = ", ".join(f'"{k}-s{s}"' for s in range(3) for k in ("standard", "quest"))
    suite = parse_suite(f'registry = ["{reg}"]\nmodels = [{models}]\n' + STUDY_SUITE, "study.toml")
    run_suite(suite, tmp_path / "out", device="cpu", quiet=True)
    res = load_results(tmp_path / "out")
    t = compute_tables(res)
    assert list(t.study.endpoint) == ["clean", "attacks[0] 8/255"]
    assert set(t.study.contrast) == {"quest - standard"}
    for _, r in t.study.iterrows():  # the verdict rows are the across-seed rows of the same settings
        seed_row = t.seeds[(t.seeds.evaluation == r.evaluation) & (t.seeds.setting == r.setting)].iloc[0]
        assert r.delta_pp == pytest.approx(seed_row.delta_pp) and r.ci_low == pytest.approx(seed_row.ci_low)
        assert r.verdict in ("better", "worse", "inconclusive", "equivalent within +-5 pp")
    assert t.study.p_holm.tolist() == pytest.approx(
        [min(1.0, max(2 * min(t.study.p_value), p)) if p == max(t.study.p_value) else min(1.0, 2 * p)
         for p in t.study.p_value])
    md = render_markdown(res, output=tmp_path / "board.md")
    sections = [line for line in md.splitlines() if line.startswith("## ")]
    assert sections[:2] == ["## Study verdicts", "## Across seeds: quest minus standard (3 pairs)"]
    # the across-seed rows of the primary endpoints read as the verdict table does, not by their unadjusted p
    across = md.split("## Across seeds")[1].split("\n## ")[0]
    for _, r in t.study.iterrows():
        row = next(line for line in across.splitlines() if line.startswith(f"| {r.evaluation} | {r.setting} |"))
        assert f"| {r.verdict} (primary; p Holm {r.p_holm:.2g}) |" in row
    assert "every other finding is secondary" in across
    head = md.split("## Across seeds")[0]
    assert "board_contrasts.png" in head and (tmp_path / "board_contrasts.png").stat().st_size > 1000


@pytest.mark.parametrize("study, message", [
    ('primary = ["attacks[3] 8/255"]', "no \\[\\[attacks\\]\\] entry 3"),
    ('primary = ["attacks[0] 2/255"]', "does not run eps 2/255"),
    ('primary = ["pgd"]', "write 'clean', 'corruption'"),
    ('primary = ["corruption"]', "needs \\[corruptions\\]"),
    ('primary = ["clean", "clean"]', "listed twice"),
    ('primary = ["clean"]\nmargin_pp = -1', "margin_pp"),
])
def test_a_study_endpoint_that_names_nothing_is_refused(study, message):
    from questbench.config.suite import parse_suite
    from questbench.errors import QuestbenchError

    text = 'models = ["m"]\n[[attacks]]\nattack = "fgsm"\neps = ["8/255"]\n[study]\n' + study + "\n"
    with pytest.raises(QuestbenchError, match=message):
        parse_suite(text, "s.toml")
