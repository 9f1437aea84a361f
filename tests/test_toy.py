import csv

import torch

from questbench.toy import TOY_KINDS, ToyConfig, make_data, run_grid, success_rates, toy_markdown, train_one


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


def test_train_one_learns_the_task_and_records_the_key_norm_curve():
    untrained, _ = train_one(ToyConfig(steps=1, train_size=512, eval_size=512), "quest", 1e-9, 0.0, 0, 0)
    run, curve = train_one(ToyConfig(steps=300, train_size=2048, eval_size=512), "quest", 1e-2, 0.0, 0, 0)
    # chance is 1/8 (one of 8 values); training must move the unbiased accuracy far above it
    assert untrained.acc_unbiased < 0.3 and run.acc_unbiased > 0.5 and run.acc_biased > 0.5
    assert run.key_norm_biased > 0 and curve[0][0] == 0 and curve[-1][0] == 299


def test_quick_grid_writes_csv_and_plots(tmp_path):
    runs = run_grid("quick", tmp_path, quiet=True, limit=None, steps=5)
    rows = list(csv.DictReader((tmp_path / "runs.csv").open()))
    assert len(rows) == len(runs) == 4 * 8 and {"attention", "success", "acc_unbiased"} <= set(rows[0])
    assert {r["attention"] for r in rows} == set(TOY_KINDS)
    assert (tmp_path / "success_heatmap.png").is_file() and (tmp_path / "key_norms.png").is_file()
    assert set(success_rates(runs)) == set(TOY_KINDS)
    assert "reported (paper)" in toy_markdown(runs, "quick")


def test_bayes_ceiling_matches_closed_form():
    # two signal dims: answer energy is 16 * chi2_2, distractors chi2_2, so
    # P(answer has the most energy) = integral_0^inf e^-u (1 - e^(-16 u))^15 du
    import numpy as np

    from questbench.toy import ToyConfig, bayes_unbiased_accuracy

    cfg = ToyConfig()
    u = np.linspace(0, 40, 400_001)
    exact = np.trapezoid(np.exp(-u) * (1 - np.exp(-cfg.signal_var * u)) ** (cfg.tokens - 1), u)
    assert abs(bayes_unbiased_accuracy(cfg, n=100_000) - exact) < 0.006
