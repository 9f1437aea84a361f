import csv

import numpy as np
import pytest
import torch

from questbench.toy.cls_design import TOY_KINDS, ToyConfig, make_data


@pytest.fixture(autouse=True)
def one_thread():
    """The toy's tensors are tiny: a second intra-op thread only spins (and on a busy machine, a lot)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_data_generator_is_seeded_and_plants_the_answer():
    cfg = ToyConfig()
    bias = torch.ones(cfg.key_dim)
    a = make_data(cfg, 64, 0.5, torch.Generator().manual_seed(0), bias)
    b = make_data(cfg, 64, 0.5, torch.Generator().manual_seed(0), bias)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    x, c, pos, biased = make_data(cfg, 2000, 1.0, torch.Generator().manual_seed(1), bias)
    answers = x[torch.arange(2000), pos]
    assert biased.all() and torch.allclose(answers.mean(0), bias, atol=0.05)
    x, c, pos, biased = make_data(cfg, 4000, 0.0, torch.Generator().manual_seed(2), bias)
    answers = x[torch.arange(4000), pos]
    assert not biased.any() and 12 < float(answers[:, 0].var()) < 20 and 0.8 < float(answers[:, 5].var()) < 1.2


def test_cls_design_learns_the_task_and_records_answer_key_norms():
    """The first design's model (a learned query token) trained by the shared runner: its answer key norms read
    the answer's own token (offset by the query token), so planting a large key there moves exactly them."""
    from questbench.toy.mean_design import answer_key_norm, train_mean
    cfg = ToyConfig(steps=300, train_size=2048, eval_size=512, query_token=True)
    untrained = train_mean(ToyConfig(steps=1, train_size=512, eval_size=512, query_token=True), "quest", 1e-9,
                           0.0, 0, 0, 0.5)
    run = train_mean(cfg, "quest", 1e-2, 0.0, 0, 0, 0.5)
    # chance is 1/8 (one of 8 values); training must move the unbiased accuracy far above it
    assert untrained.acc_unbiased < 0.3 and run.acc_unbiased > 0.5 and run.acc_biased > 0.5
    assert run.key_norm_biased > 0 and run.key_norm_unbiased > 0 and run.trace[0][0] == 0
    from questbench.toy.cls_design import ToyRetriever
    torch.manual_seed(0)
    model = ToyRetriever(cfg, "standard")
    x, c, pos, _ = make_data(cfg, 64, 0.0, torch.Generator().manual_seed(0), torch.zeros(cfg.key_dim))
    with torch.no_grad():
        k = model.attn.qkv(model.tokens(x, c))[..., cfg.width: 2 * cfg.width].norm(dim=-1)
    assert answer_key_norm(model, x, c, pos) == pytest.approx(float(k[torch.arange(64), pos + 1].mean()), rel=1e-5)


@pytest.mark.slow
def test_cls_quick_grid_writes_csv_plots_and_its_control(tmp_path):
    from questbench.toy.mean_design import run_mean_grid, write_mean_outputs
    runs = run_mean_grid("cls-quick", tmp_path, quiet=True, steps=5, workers=1)
    md = write_mean_outputs(runs, "cls-quick", tmp_path)
    rows = list(csv.DictReader((tmp_path / "runs.csv").open()))
    assert len(rows) == len(runs) == 4 * 8 * 2 and {"acc_conflict", "key_norm_biased"} <= set(rows[0])
    assert {r["attention"] for r in rows} == set(TOY_KINDS) and {float(r["biased_fraction"]) for r in rows} == {0.5, 0.0}
    assert (tmp_path / "success_heatmap.png").is_file() and md.startswith("# QUEST toy example, cls design")
    assert "fraction-0 control" in md and "reported (paper)" in md


def test_position_rule_matches_closed_form():
    # two signal dims: answer energy is 16 * chi2_2, distractors chi2_2, so
    # P(answer has the most energy) = integral_0^inf e^-u (1 - e^(-16 u))^15 du
    import numpy as np

    from questbench.toy.common import signal_energy_accuracy

    cfg = ToyConfig()
    u = np.linspace(0, 40, 400_001)
    exact = np.trapezoid(np.exp(-u) * (1 - np.exp(-cfg.signal_var * u)) ** (cfg.tokens - 1), u)
    x, _, pos, _ = make_data(cfg, 100_000, 0.0, torch.Generator().manual_seed(0), torch.zeros(cfg.key_dim))
    assert abs(signal_energy_accuracy(x, pos, cfg.signal_dims) - exact) < 0.006


def test_bayes_class_rule_is_the_ceiling():
    """The target is the answer's class, which other tokens share: the Bayes rule sums the position posterior per
    class (issue 39). Checked three ways: it is calibrated (its accuracy equals the mean of its largest posterior,
    which only the true posterior satisfies), it beats both the position rule and the class of the highest-energy
    token on the same samples, and with no signal it reduces to the majority class (computed here directly)."""
    import numpy as np

    from questbench.toy.cls_design import bayes_unbiased_accuracy
    from questbench.toy.common import bayes_class_accuracy, bayes_class_posterior, signal_energy_accuracy

    cfg = ToyConfig()
    x, c, pos, _ = make_data(cfg, 100_000, 0.0, torch.Generator().manual_seed(5), torch.zeros(cfg.key_dim))
    post = bayes_class_posterior(x, c, cfg.signal_dims, cfg.signal_var, cfg.values)
    acc = bayes_class_accuracy(x, c, pos, cfg.signal_dims, cfg.signal_var, cfg.values)
    assert np.allclose(post.sum(1), 1.0)
    assert acc == pytest.approx(post.max(1).mean(), abs=0.004)  # Monte Carlo SE ~0.0012
    rows = torch.arange(len(pos))
    top = (x[..., : cfg.signal_dims] ** 2).sum(-1).argmax(1)
    top_class = float((c[rows, top] == c[rows, pos]).double().mean())
    assert acc > top_class > signal_energy_accuracy(x, pos, cfg.signal_dims)
    assert 0.83 < acc < 0.85 and abs(bayes_unbiased_accuracy(cfg, n=100_000) - acc) < 0.006
    # no signal (variance 1): every position equally likely, so the rule picks the most frequent class
    flat = ToyConfig(signal_var=1.0)
    x0, c0, p0, _ = make_data(flat, 20_000, 0.0, torch.Generator().manual_seed(6), torch.zeros(flat.key_dim))
    counts = np.stack([np.bincount(row, minlength=flat.values) for row in c0.numpy()])
    majority = counts.argmax(1)
    expected = float((majority == c0.numpy()[np.arange(len(p0)), p0.numpy()]).mean())
    got = bayes_class_accuracy(x0, c0, p0, flat.signal_dims, flat.signal_var, flat.values)
    assert got == pytest.approx(expected, abs=1e-12)


def test_shared_parts_load_without_torch_and_take_numpy_or_torch():
    """questbench/toy/common.py holds what both designs use; the statistics read it without torch, and its Bayes
    rule gives the same accuracy on numpy arrays as on the torch tensors the designs pass."""
    import subprocess
    import sys

    from questbench.toy.common import signal_energy_accuracy, tidy_csv
    code = ("import sys, questbench.toy.common, questbench.toy.stats\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = ToyConfig()
    x, _, pos, _ = make_data(cfg, 2_000, 0.0, torch.Generator().manual_seed(1), torch.zeros(cfg.key_dim))
    energy = x[..., : cfg.signal_dims].square().sum(-1)
    expected = float((energy.argmax(1) == pos).double().mean())
    assert signal_energy_accuracy(x, pos, cfg.signal_dims) == pytest.approx(expected, abs=1e-12)
    assert signal_energy_accuracy(x.numpy(), pos.numpy(), cfg.signal_dims) == pytest.approx(expected, abs=1e-12)
    assert 0.6 < expected < 0.95  # neither trivial nor chance (1/16)
    assert tidy_csv([]) == ""
    assert tidy_csv([{"a": 0.1234567, "b": 3}]) == "a,b\n0.123457,3\n"


# --- the mean design (questbench/toy/mean_design.py) ------------------------------------------------------------------
def test_mean_design_conflict_set_and_bayes_rule():
    import math

    from questbench.toy.mean_design import bayes_accuracy, conflict_set
    cfg = ToyConfig()
    gen = torch.Generator().manual_seed(3)
    bias = torch.zeros(cfg.key_dim)
    bias[0] = 4.0
    x, c, pos = conflict_set(cfg, 500, gen, bias)
    dist = (x - bias).norm(dim=-1)  # the lure is the token nearest the shortcut b, and it is never the answer
    assert (dist.argmin(1) != pos).all() and (dist.min(1).values < 3 * math.sqrt(cfg.bias_var * cfg.key_dim)).all()
    # the Bayes rule answers the class of the token with most energy in the signal dimensions when one dominates:
    # plant it, and it is right exactly when the planted token is the answer
    x2 = torch.zeros(4, cfg.tokens, cfg.key_dim)
    p = torch.tensor([1, 5, 9, 15])
    x2[torch.arange(4), p, 0] = 5.0
    c2 = torch.randperm(cfg.tokens, generator=torch.Generator().manual_seed(0))[None].repeat(4, 1) % cfg.values
    other = (p + 1) % cfg.tokens
    differs = c2[torch.arange(4), p] != c2[torch.arange(4), other]
    assert bayes_accuracy(cfg, x2, c2, p) == 1.0
    assert bayes_accuracy(cfg, x2, c2, other) == pytest.approx(1.0 - float(differs.double().mean()))


def test_mean_design_flags_instability_and_keeps_stable_runs():
    from questbench.toy.mean_design import train_mean
    cfg = ToyConfig(steps=80, train_size=512, eval_size=256, log_every=10)
    calm = train_mean(cfg, "standard", 1e-3, 0.0, 0, 0, 0.5)
    wild = train_mean(cfg, "standard", 50.0, 0.0, 0, 0, 0.5)
    assert not calm.unstable and calm.unstable_reason == "" and calm.max_logit < 1e3
    assert wild.unstable and wild.unstable_reason and not wild.success
    assert len(calm.trace) == 9 and all(len(t) == 6 for t in calm.trace)  # every 10 steps and the last


def _grid(effect_quest=0.05, noise=0.01, seed=0):
    """A synthetic runs table in the grid's layout: 4 lr x 3 wd cells, 2 init x 2 data seeds, two kinds."""
    import pandas as pd
    rng = np.random.default_rng(seed)
    rows = []
    for lr in (1e-3, 1e-2, 3e-2, 0.1):
        for wd in (0, 0.01, 0.1):
            cell = rng.normal(0, 0.03)
            for i in range(2):
                for d in range(2):
                    for kind, eff in (("standard", 0.0), ("quest", effect_quest)):
                        for frac in (0.5, 0.0):
                            acc = 0.72 + cell + eff + rng.normal(0, noise) + (0.04 if frac == 0.0 else 0.0)
                            if lr == 0.1:
                                acc = 0.3
                            rows.append(dict(attention=kind, lr=lr, wd=wd, init_seed=i, data_seed=d,
                                             biased_fraction=frac, acc_unbiased=acc, acc_biased=0.9,
                                             acc_conflict=acc - 0.3, bayes_unbiased=0.8, success=False,
                                             unstable=lr == 0.1))
    return pd.DataFrame(rows)


def test_kind_difference_is_a_t_interval_over_data_seeds_or_cells_and_matches_its_closed_form():
    from scipy import stats

    from questbench.toy.stats import kind_difference, shortcut_harm, with_outcomes
    df = with_outcomes(_grid())
    main = df[df.biased_fraction == 0.5]
    q = main[main.attention == "quest"].set_index(["lr", "wd", "init_seed", "data_seed"]).acc_unbiased
    s = main[main.attention == "standard"].set_index(["lr", "wd", "init_seed", "data_seed"]).acc_unbiased
    for level, rows, n_units in ((["data_seed"], df, 2), (["lr", "wd"], df[df.data_seed == 0], 12)):
        m, lo, hi, n = kind_difference(rows, "quest", "standard", "acc_unbiased")
        d = q - s if level == ["data_seed"] else (q - s)[(q - s).index.get_level_values("data_seed") == 0]
        units = d.groupby(level=level).mean().to_numpy()
        half = stats.t.ppf(0.975, len(units) - 1) * units.std(ddof=1) / np.sqrt(len(units))
        assert n == n_units and m == pytest.approx(units.mean())
        assert (lo, hi) == (pytest.approx(units.mean() - half), pytest.approx(units.mean() + half))
    one_seed = df[(df.lr < 0.1) & (df.data_seed == 0)]
    harm, hlo, hhi, cells_h = shortcut_harm(one_seed, "quest")
    assert cells_h == 9 and hlo < harm < hhi and harm == pytest.approx(4.0, abs=0.5)


def test_toy_report_calls_a_tie_a_tie_and_drops_dead_learning_rates():
    from questbench.toy.stats import learning_rates, markdown, with_outcomes
    tied = markdown(_grid(effect_quest=0.0, seed=1), "test")
    assert "| quest - standard |" in tied and ": tie" in tied.split("| quest - standard |")[1].split("\n")[0]
    learn, dead = learning_rates(with_outcomes(_grid(effect_quest=0.2)))
    assert dead == [0.1] and 0.1 not in learn
    clear = markdown(_grid(effect_quest=0.2), "test")
    assert "quest higher" in clear.split("| quest - standard |")[1].split("\n")[0]


def test_mean_grid_writes_each_run_and_resumes(tmp_path):
    from questbench.toy.mean_design import run_mean_grid
    first = run_mean_grid("quick", tmp_path, quiet=True, steps=5, limit=2, workers=1)
    lines = (tmp_path / "runs.jsonl").read_text().splitlines()
    assert len(first) == 2 and len(lines) == 2
    again = run_mean_grid("quick", tmp_path, quiet=True, steps=5, limit=4, workers=1)
    lines2 = (tmp_path / "runs.jsonl").read_text().splitlines()
    assert len(again) == 4 and len(lines2) == 4 and lines2[:2] == lines  # only the two new runs were trained
    assert [r.key for r in again[:2]] == [r.key for r in first]


def test_split_design_reads_queries_and_keys_from_the_key_part_only():
    """Changing every token's value leaves the attention weights as they were (for every kind), also after
    training steps: the qkv weight's masked blocks stay zero."""
    from questbench.models.attention import tap_attention
    from questbench.toy.cls_design import ToyConfig
    from questbench.toy.mean_design import SplitRetriever
    cfg = ToyConfig(qk_from_key_part=True)
    torch.manual_seed(0)
    x = torch.randn(4, cfg.tokens, cfg.key_dim)
    c1 = torch.randint(0, cfg.values, (4, cfg.tokens))
    c2 = (c1 + 3) % cfg.values
    for kind in ("standard", "quest", "qknorm_hs"):
        model = SplitRetriever(cfg, kind)
        opt = torch.optim.AdamW(model.parameters(), lr=0.05)
        for _ in range(3):
            opt.zero_grad()
            model(x, c1).logsumexp(1).mean().backward()
            opt.step()
        seen = []
        with torch.no_grad(), tap_attention(model, lambda m, q, k, a: seen.append(a.clone())):
            out1, out2 = model(x, c1), model(x, c2)
        assert torch.allclose(seen[0], seen[1]) and not torch.allclose(out1, out2)
        w = model.attn.qkv.weight.detach()
        dim = cfg.key_dim + cfg.values
        assert float(w[: 2 * dim, cfg.key_dim:].abs().max()) == 0 and float(w[2 * dim:, : cfg.key_dim].abs().max()) == 0


def test_warmup_schedule_rises_linearly_then_decays():
    from questbench.toy.cls_design import ToyConfig, training_setup
    cfg = ToyConfig(steps=100, warmup_steps=10)
    opt, sched, _ = training_setup(torch.nn.Linear(2, 2), cfg, 0.1, 0.0, 0)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.01) and lrs[9] == pytest.approx(0.1) and lrs[-1] < 0.001
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10])) and all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_shortcut_effect_is_the_difference_in_differences_of_a_known_grid():
    """Synthetic runs whose conflict-set accuracy is a kind's own level, plus a shortcut loss at fraction 0.5 that
    differs by kind, plus cell noise shared by both fractions: the control gap is the level gap, the
    difference-in-differences the shortcut gap, exactly; the interval is scipy's t over the cells."""
    import pandas as pd
    from scipy import stats as sps

    from questbench.toy.stats import shortcut_effect
    level, loss = {"quest": 0.70, "standard": 0.65}, {"quest": 0.10, "standard": 0.25}
    rng = np.random.default_rng(0)
    rows = []
    for lr in (0.01, 0.03, 0.1):
        for wd in (0.0, 0.1):
            cell = {k: rng.normal(0, 0.02) for k in level}  # a cell's own shift, the same at both fractions
            for seed in (0, 1):
                for f in (0.0, 0.5):
                    for k in level:
                        rows.append(dict(attention=k, lr=lr, wd=wd, init_seed=seed, data_seed=0, biased_fraction=f,
                                         acc_conflict=level[k] + cell[k] - (loss[k] if f == 0.5 else 0.0)))
    e = shortcut_effect(pd.DataFrame(rows), "quest", "standard")
    assert e["did"][0] == pytest.approx(loss["standard"] - loss["quest"])
    assert e["did"][3] == 6 and e["did"][2] - e["did"][1] == pytest.approx(0, abs=1e-12)  # no spread left
    control = pd.DataFrame(rows).query("biased_fraction == 0").pivot_table(
        index=["lr", "wd"], columns="attention", values="acc_conflict", aggfunc="mean")
    gaps = (control.quest - control.standard).to_numpy()
    lo, hi = sps.t.interval(0.95, len(gaps) - 1, loc=gaps.mean(), scale=sps.sem(gaps))
    assert e["without"][:3] == pytest.approx((gaps.mean(), lo, hi))


def _seeded_grid(rng, mu: float, seed_sd: float, seeds: int) -> "pd.DataFrame":
    """Runs whose quest - standard gap is mu plus an effect of the data seed shared by every cell and init seed of
    that data realization, plus small run noise."""
    import pandas as pd
    rows = []
    for d in range(seeds):
        shift = rng.normal(0, seed_sd)
        for lr in (0.01, 0.03):
            for wd in (0.0, 0.1):
                for s in (0, 1):
                    for kind, level in (("standard", 0.5), ("quest", 0.5 + mu + shift)):
                        for f in (0.0, 0.5):
                            rows.append(dict(attention=kind, lr=lr, wd=wd, init_seed=s, data_seed=d,
                                             biased_fraction=f, acc_conflict=level + rng.normal(0, 0.002)))
    return pd.DataFrame(rows)


def test_intervals_run_over_data_seeds_when_enough_were_drawn():
    """With five data seeds the data seed is the unit: the interval is scipy's t over the per-seed means, and it
    covers the true gap at about its level when the data realization matters; the interval over lr x wd cells
    (what two data seeds allow) would cover it far less often, so a return to cells fails this test."""
    from scipy import stats as sps

    from questbench.toy.stats import shortcut_effect, unit_of
    rng = np.random.default_rng(3)
    df = _seeded_grid(rng, 0.05, 0.03, 5)
    assert unit_of(df) == "data seeds" and unit_of(df[df.data_seed < 2]) == "data seeds"
    assert unit_of(df[df.data_seed == 0]) == "cells"
    m, lo, hi, n = shortcut_effect(df, "quest", "standard")["with"]
    per_seed = df[df.biased_fraction == 0.5].pivot_table(index="data_seed", columns="attention",
                                                         values="acc_conflict", aggfunc="mean")
    gaps = (per_seed.quest - per_seed.standard).to_numpy()
    assert n == 5 and (m, lo, hi) == pytest.approx((gaps.mean(), *sps.t.interval(0.95, 4, gaps.mean(), sps.sem(gaps))))
    covered = 0
    for _ in range(300):
        m, lo, hi, n = shortcut_effect(_seeded_grid(rng, 0.05, 0.03, 5), "quest", "standard")["with"]
        covered += lo <= 0.05 <= hi
    assert 0.90 <= covered / 300 <= 0.99


def test_toy_report_names_the_unit_of_its_intervals():
    from questbench.toy.stats import markdown
    df = _seeded_grid(np.random.default_rng(0), 0.05, 0.03, 5)
    df = df.assign(acc_unbiased=0.8, bayes_unbiased=0.84, unstable=False, success=True)
    md = markdown(df, "split-bias")
    assert md.startswith("# QUEST toy example, split design with a learned qkv bias")
    assert "95% Student t interval over the 5 data seeds" in md and "| data seeds |" in md
    assert "over the 4 cells where some kind learns (the cells are the units; only 1 data seed(s)" in markdown(df[df.data_seed == 0], "split")


def test_key_norm_table_reads_only_runs_that_recorded_it():
    from questbench.toy.stats import key_norm_section, with_outcomes
    df = _seeded_grid(np.random.default_rng(0), 0.05, 0.03, 2).assign(
        acc_unbiased=0.8, bayes_unbiased=0.84, unstable=False, success=True)
    assert key_norm_section(with_outcomes(df), ["quest", "standard"]) == []  # older runs: no column, no table
    df = df.assign(key_norm_biased=np.where(df.attention == "standard", 6.0, 2.0), key_norm_unbiased=2.0)
    df.loc[df.index[:4], ["key_norm_biased", "key_norm_unbiased"]] = np.nan
    lines = key_norm_section(with_outcomes(df), ["standard", "quest"])
    assert f"over {len(df) - 4} of {len(df)} runs" in lines[2]
    row = next(line for line in lines if line.startswith("| standard |"))
    assert row.startswith("| standard | 6.000 (6.000-6.000) | 2.000 (2.000-2.000) | 3.000 (3.000-3.000) |")


def test_paper_claims_get_their_verdict_from_the_interval():
    """quest well above standard: reproduced; qnorm equal to standard: not established; qknorm_hs above
    standard where the paper reports it failing: reversed. Standard's biased-answer keys grow only when trained
    with the shortcut: reproduced, and the measured growth is the planted one."""
    from questbench.toy.stats import claims_section, with_outcomes
    rng = np.random.default_rng(5)
    level = {"standard": 0.50, "quest": 0.60, "qnorm": 0.50, "qknorm_hs": 0.55}
    rows = []
    for d in range(4):
        for lr in (0.01, 0.03):
            for s in (0, 1):
                for kind, acc in level.items():
                    for f in (0.0, 0.5):
                        grow = 3.0 if (kind == "standard" and f == 0.5) else 1.0
                        rows.append(dict(attention=kind, lr=lr, wd=0.0, init_seed=s, data_seed=d, biased_fraction=f,
                                         acc_conflict=acc + rng.normal(0, 0.01), acc_unbiased=0.8,
                                         bayes_unbiased=0.84, unstable=False, success=True,
                                         key_norm_biased=2.0 * grow + rng.normal(0, 0.01), key_norm_unbiased=2.0))
    import pandas as pd
    df = with_outcomes(pd.DataFrame(rows))
    lines = claims_section(df, df, list(level))
    verdict = {line.split(" | ")[0].lstrip("| "): line.rstrip(" |").rsplit(" | ", 1)[1] for line in lines
               if line.startswith("| ") and "---" not in line and "the paper says" not in line}
    assert verdict["QUEST above standard (58% vs 25% success)"] == "reproduced"
    assert verdict["QNorm above standard (49% vs 25%)"].startswith("inconclusive")
    assert verdict["QKNorm fails (~0%; here QKNorm-HS, below standard)"] == "reversed"
    assert verdict["standard attention grows the keys of the biased answers"] == "reproduced"
    growth = next(line for line in lines if "grows the keys" in line)
    assert "fraction 0.5 minus 0: +2.00" in growth and "4 data seeds" in growth


@pytest.mark.parametrize("folder, preset", [("toy", "full"), ("toy-split", "split"), ("toy-cls", "cls"),
                                            ("toy-split-bias", "split-bias")])
def test_committed_toy_pages_are_what_their_committed_runs_give(folder, preset):
    """Each committed toy page is rendered from its committed runs.csv as the code stands (so a change to the
    statistics that moves a number, or a page edited by hand, fails here until the page is re-rendered)."""
    from pathlib import Path

    from questbench.toy.stats import load_runs, markdown

    root = Path(__file__).parents[1] / "leaderboards"
    page = (root / f"{folder}.md").read_text()
    assert markdown(load_runs(root / folder / "runs.csv"), preset, f"{folder}/") == page
