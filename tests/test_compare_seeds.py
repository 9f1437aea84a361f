"""compare() and compare_seeds() on a results table built by hand: the numbers each row must hold, computed here
independently of questbench.report.compare."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from questbench.stats.metrics import seed_level_inference
from questbench.report.compare import RELATIVE, compare, compare_seeds
from questbench.store.results import SAMPLE_COLUMNS, Results

N_IMG = 60
SETTINGS = [("fog", 1), ("fog", 3), ("contrast", 2)]


def _rows(model, attention, pair, seed, shift, settings):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(N_IMG):
        sid = f"test/{i}"
        rows.append(dict(model=model, attention=attention, pair=pair, evaluation="clean", setting="clean",
                         sample_id=sid, label=0, pred=0, correct=bool(rng.random() < 0.8 + shift / 2)))
        for c, sev in settings:
            rows.append(dict(model=model, attention=attention, pair=pair, evaluation="corruption",
                             setting=f"{c}/{sev}", corruption=c, severity=sev, sample_id=sid, label=0, pred=0,
                             correct=bool(rng.random() < 0.5 + shift)))
    return rows


@pytest.fixture
def results():
    rows = []
    for k, shift in enumerate((0.02, 0.10, 0.05)):
        # pair 2 lacks one corruption setting (both of its models): its delta uses its own settings per image
        settings = SETTINGS if k != 2 else SETTINGS[:2]
        rows += _rows(f"std-s{k}", "standard", f"quest-s{k}", 10 * k, 0.0, settings)
        rows += _rows(f"quest-s{k}", "quest", f"std-s{k}", 10 * k + 1, shift, settings)
    df = pd.DataFrame(rows)
    for col in SAMPLE_COLUMNS:
        if col not in df:
            df[col] = None
    return Results(samples=df[SAMPLE_COLUMNS], jobs=pd.DataFrame(), diagnostics=pd.DataFrame(), provenance={})


def _per_image(s, model, evaluation):
    g = s[(s.model == model) & (s.evaluation == evaluation)]
    return g.groupby("sample_id").correct.agg(["sum", "size"]).sort_index()


def test_relative_row_is_the_difference_of_drops(results):
    s = results.samples
    df = compare(results, "std-s0", "quest-s0")
    row = df[(df.evaluation == "corruption") & (df.setting == RELATIVE)].iloc[0]
    drop = {}
    for m in ("std-s0", "quest-s0"):
        corr, clean = _per_image(s, m, "corruption"), _per_image(s, m, "clean")
        drop[m] = 100 * (corr["sum"].sum() / corr["size"].sum() - clean["sum"].mean())
    assert row.baseline_acc == pytest.approx(drop["std-s0"]) and row.model_acc == pytest.approx(drop["quest-s0"])
    assert row.delta_pp == pytest.approx(drop["quest-s0"] - drop["std-s0"])
    assert row.ci_low <= row.delta_pp <= row.ci_high and row.n_images == N_IMG


def test_seed_rows_use_each_pairs_own_settings_and_the_seed_level_method(results):
    s = results.samples
    seeds = compare_seeds(results)
    assert list(seeds.columns[:12]) == ["attention", "evaluation", "setting", "n_pairs", "n_images",
                                        "per_pair_delta_pp", "delta_pp", "ci_low", "ci_high", "p_value", "p_floor",
                                        "method"]
    for setting, relative in (("all", False), (RELATIVE, True)):
        row = seeds[(seeds.evaluation == "corruption") & (seeds.setting == setting)].iloc[0]
        x = []
        for k in range(3):
            a, b = _per_image(s, f"std-s{k}", "corruption"), _per_image(s, f"quest-s{k}", "corruption")
            d = 100 * (b["sum"] - a["sum"]) / a["size"]  # this pair's own settings per image
            if relative:
                d -= 100 * (_per_image(s, f"quest-s{k}", "clean")["sum"] - _per_image(s, f"std-s{k}", "clean")["sum"])
            x.append(d.to_numpy())
        ref = seed_level_inference(np.stack(x))
        assert row.n_pairs == 3 and row.n_images == N_IMG
        assert row.delta_pp == pytest.approx(ref["delta_pp"])
        assert (row.ci_low, row.ci_high) == (pytest.approx(ref["ci_low"]), pytest.approx(ref["ci_high"]))
        assert row.p_value >= 0.25 and row.p_floor == 0.25
        assert row.per_pair_delta_pp == ", ".join(f"{v:+.2f}" for v in ref["per_pair"])


def test_the_relative_row_is_adjusted_with_the_headline_family(results):
    from questbench.stats.metrics import holm
    df = compare(results, "std-s0", "quest-s0")
    head = df[(df.evaluation == "clean") | df.setting.isin(["all", RELATIVE])]
    assert RELATIVE in set(head.setting)
    assert head.p_holm.tolist() == pytest.approx(holm(head.p_value.tolist()))


@pytest.fixture
def four_kinds():
    """Four seeds of the four kinds on the same images and settings, each kind with its own accuracy shift."""
    rows = []
    shifts = {"standard": 0.0, "quest": 0.08, "qnorm": 0.03, "qknorm_hs": 0.06}
    for k in range(4):
        for kind, shift in shifts.items():
            name = f"{kind}-s{k}"
            rows += _rows(name, kind, f"standard-s{k}" if kind != "standard" else "", 100 * k + len(kind),
                          shift + 0.01 * k * (kind == "quest"), SETTINGS)
    df = pd.DataFrame(rows)
    for col in SAMPLE_COLUMNS:
        if col not in df:
            df[col] = None
    return Results(samples=df[SAMPLE_COLUMNS], jobs=pd.DataFrame(), diagnostics=pd.DataFrame(), provenance={})


def _accuracy(s, model, evaluation):
    return 100 * s[(s.model == model) & (s.evaluation == evaluation)].correct.mean()


def test_kind_contrasts_and_factorial_effects_match_an_independent_recomputation(four_kinds):
    """Each contrast's mean is the weighted sum of accuracy differences, seed by seed (standard cancels); its
    interval is seed_level_inference's on the per-image contrast and is never narrower than the pairs-only t
    interval of scipy over the per-seed contrasts."""
    from scipy import stats

    from questbench.report.compare import compare_kinds
    from questbench.stats.study import FACTORIAL

    s = four_kinds.samples
    table = compare_kinds(four_kinds)
    assert set(table.family) == {"kinds", "factorial"}
    assert set(table[table.family == "kinds"].contrast) == {"qknorm_hs - qnorm", "qknorm_hs - quest",
                                                            "qnorm - quest"}
    weights = {"qnorm - quest": {"qnorm": 1, "quest": -1}, **FACTORIAL}
    for name, w in weights.items():
        for evaluation in ("clean", "corruption"):
            setting = "clean" if evaluation == "clean" else "all"
            row = table[(table.contrast == name) & (table.evaluation == evaluation) & (table.setting == setting)]
            assert len(row) == 1
            row = row.iloc[0]
            per_seed = np.array([sum(wk * (_accuracy(s, f"{kind}-s{k}", evaluation)
                                           - _accuracy(s, f"standard-s{k}", evaluation)) for kind, wk in w.items())
                                 for k in range(4)])
            assert row.delta_pp == pytest.approx(per_seed.mean())
            assert row.n_pairs == 4 and row.n_images == N_IMG
            t_lo, t_hi = stats.ttest_1samp(per_seed, 0).confidence_interval(0.95)
            assert row.ci_low <= t_lo + 1e-9 and row.ci_high >= t_hi - 1e-9
            assert row.ci_low < row.delta_pp < row.ci_high


def test_factorial_rows_need_all_four_kinds(four_kinds):
    from questbench.report.compare import compare_kinds

    three = Results(samples=four_kinds.samples[four_kinds.samples.attention != "qnorm"], jobs=pd.DataFrame(),
                    diagnostics=pd.DataFrame(), provenance={})
    table = compare_kinds(three)
    assert set(table.family) == {"kinds"} and set(table.contrast) == {"qknorm_hs - quest"}


def test_the_delta_plot_keeps_one_legend_entry_per_kind_where_the_seed_table_lacks_a_setting(four_kinds, tmp_path):
    """The across-seed table leaves out single corruptions, so the corruption panel has no kind mean there; it
    must still label each kind once, not each of its pairs (the study page's panel listed 30 pairs and its
    legend covered the plot)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as real_plt
    from questbench.report.compare import compare_pairs, standard_pairs
    from questbench.report.plots import _write_deltas
    from questbench.report.tables import Tables

    triples = standard_pairs(four_kinds.samples)
    pairs = compare_pairs(four_kinds)
    empty = pd.DataFrame()
    t = Tables(clean=empty, corruptions=empty, severity=empty, attacks=empty, pairs=pairs,
               seeds=compare_seeds(four_kinds))
    assert not t.seeds.setting.isin([f"{c}/{s}" for c, s in SETTINGS]).any()  # what the case is about
    figures = []

    class Recording:  # matplotlib.pyplot, keeping each figure it is asked to close
        def __getattr__(self, name):
            return getattr(real_plt, name)

        def close(self, fig):
            figures.append(fig)

    kinds = {model: kind for _, model, kind in triples}
    assert _write_deltas(t, kinds, tmp_path / "deltas.png", Recording()) is not None
    (fig,) = figures
    legends = [[text.get_text() for text in ax.get_legend().get_texts()] for ax in fig.axes]
    real_plt.close(fig)
    assert len(legends) == 2 and all(len(entries) == 3 for entries in legends)
    summary, corruption = legends
    assert all("mean of 4 pairs" in e for e in summary)
    assert sorted(corruption) == [f"{k} minus standard, each of 4 pairs (no across-seed row)"
                                  for k in ("qknorm_hs", "qnorm", "quest")]
