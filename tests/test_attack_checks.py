"""Checks that flag an untrustworthy attack result: each fails on a model built to fail it (real attacks on
real models, not synthetic outcomes) and passes on the built-in models; the consistency rules also on
synthetic outcomes with a known answer."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

import questbench
from questbench.evaluators.attacks import evaluate_attack
from questbench.report.checks import check_flags, checks_table
from questbench.config.settings import AttackConfig

EPS = 8 / 255


def _rows(model, evaluation, setting, attack, eps, records):
    return [dict(model=model, attention="standard", pair="", evaluation=evaluation, setting=setting, attack=attack,
                 norm="Linf", eps=eps, **r) for r in records]


def _synthetic(model, attack, robust, eps=EPS):
    return _rows(model, "attack", f"{attack}/{eps}", attack, eps,
                 [dict(sample_id=f"test/{i}", label=0, pred=0, correct=bool(r)) for i, r in enumerate(robust)])


def test_one_step_and_autoattack_order_flags_fire_beyond_noise_only():
    rng = np.random.default_rng(0)
    pgd = rng.random(400) < 0.4
    consistent = pd.DataFrame(_synthetic("m", "pgd", pgd) + _synthetic("m", "fgsm", pgd | (rng.random(400) < 0.3))
                              + _synthetic("m", "autoattack", pgd & (rng.random(400) < 0.9)))
    assert check_flags(consistent) == []
    masked = pd.DataFrame(_synthetic("m", "pgd", pgd) + _synthetic("m", "fgsm", pgd & (rng.random(400) < 0.5))
                          + _synthetic("m", "autoattack", pgd | (rng.random(400) < 0.5)))
    flags = check_flags(masked)
    assert len(flags) == 2 and "one-step" in " ".join(flags) and "AutoAttack is weaker" in " ".join(flags)
    noisy = pd.DataFrame(_synthetic("m", "pgd", pgd) + _synthetic("m", "fgsm", np.where(np.arange(400) < 3, False, pgd)))
    assert check_flags(noisy) == []  # three samples are noise, not a flag


class _MaskedGradients(nn.Module):
    """The same logits as ``net``, but no gradient reaches the input for the first ``masked`` backward-capable
    forwards (``masked=None``: never): a non-differentiable step (x + (x.detach() - x)) in front of the net."""

    def __init__(self, net: nn.Module, masked: int | None = None):
        super().__init__()
        self.net, self.masked = net, masked

    def forward(self, x):
        if torch.is_grad_enabled() and x.requires_grad and (self.masked is None or self.masked > 0):
            if self.masked is not None:
                self.masked -= 1
            x = x + (x.detach() - x)
        return self.net(x)


def _check_rows(model_name, name, cfg, records):
    return _rows(model_name, "check", f"check:{name}/{cfg.key}", cfg.attack, cfg.eps, records)


@pytest.fixture(scope="module")
def data():
    return questbench.load_dataset("fashion-mnist").subset(range(60))


def _run(model, cfg, ds, source=None):
    return evaluate_attack(model, ds, cfg, seed=1, batch_size=100, source=source).records


@pytest.mark.slow
def test_masked_gradients_fail_the_transfer_and_large_budget_checks(data):
    """Zero input gradients: white-box PGD moves only by its random start, so PGD crafted on the pair's other
    model is far stronger, and even 64/255 leaves most samples robust."""
    std, quest = questbench.load_model("fmnist-vit-standard-s0"), questbench.load_model("fmnist-vit-quest-s0")
    masked = _MaskedGradients(quest)
    short, large = AttackConfig("pgd", EPS, steps=10), AttackConfig("pgd", 64 / 255, steps=10)
    rows = (_check_rows("masked", "pgd-short", short, _run(masked, short, data))
            + _check_rows("masked", "transfer", short, _run(masked, short, data, source=std))
            + _check_rows("masked", "large-eps", large, _run(masked, large, data)))
    table, long = checks_table(pd.DataFrame(rows))
    row = table.iloc[0]
    assert row["transfer"].endswith("FLAG") and row["large budget"].endswith("FLAG") and row["flags"] == 2
    flags = check_flags(pd.DataFrame(rows))
    assert any("gradient masking" in f for f in flags) and any("does not reach ~0" in f for f in flags)
    assert {r["check"]: r["flag"] for r in long} == {"transfer": True, "large budget": True}


@pytest.mark.slow
def test_an_attack_that_needs_more_steps_fails_the_steps_check(data):
    """Gradients masked for the first 12 gradient evaluations: PGD-10 never gets past them, PGD-30 x 2 does."""
    quest = questbench.load_model("fmnist-vit-quest-s0")
    short, long = AttackConfig("pgd", EPS, steps=10), AttackConfig("pgd", EPS, steps=30, restarts=2)
    rows = (_check_rows("slow", "pgd-short", short, _run(_MaskedGradients(quest, masked=12), short, data))
            + _check_rows("slow", "pgd-long", long, _run(_MaskedGradients(quest, masked=12), long, data)))
    table, _ = checks_table(pd.DataFrame(rows))
    assert table.iloc[0]["steps"].endswith("FLAG")
    assert any("had not converged" in f for f in check_flags(pd.DataFrame(rows)))


@pytest.mark.slow
def test_the_built_in_models_pass_every_check(tmp_path):
    """A suite with FGSM and PGD sweeps and [checks] on the seed-0 standard/QUEST pair: planned per model
    (transfer from the pair's other model), run, and every check passes."""
    from questbench.report.markdown import render_markdown
    from questbench.report.tidy import render_csv
    from questbench.store.results import load_results
    from questbench.run.runner import run_suite
    from questbench.config.suite import parse_suite
    suite = parse_suite("""
models = ["fmnist-vit-standard-s0", "fmnist-vit-quest-s0"]
num_workers = 0
batch_size = 100
clean = false
[data]
samples = 100
[[attacks]]
attack = "fgsm"
eps = ["8/255"]
[[attacks]]
attack = "pgd"
eps = ["8/255"]
[checks]
samples = 100
long_steps = 30
""", "checks.toml")
    out = tmp_path / "out"
    run_suite(suite, out, device="cpu", quiet=True)
    res = load_results(out)
    chk = res.samples[res.samples.evaluation == "check"]
    transfer = res.jobs[res.jobs.setting.str.startswith("check:transfer")]
    assert sorted(zip(transfer.model, transfer.source)) == [("fmnist-vit-quest-s0", "fmnist-vit-standard-s0"),
                                                             ("fmnist-vit-standard-s0", "fmnist-vit-quest-s0")]
    assert chk.groupby("model").setting.nunique().tolist() == [4, 4]
    table, _ = checks_table(res.samples)
    assert table["flags"].tolist() == [0, 0], table.to_dict("records")
    assert set(table.columns) >= {"one-step", "steps", "large budget", "transfer"}
    md = render_markdown(res)
    # a pass is printed with what it is worth: the smallest gap a 100-image comparison can flag
    assert "## Attack checks" in md and "Every check passed for every model; a comparison can flag only a gap " \
        "of at least 8.0 pp at n = 100" in md
    assert "## Attack sweeps" in md and "check:" not in md.split("## Attack sweeps")[1].split("## ")[0]
    csv = render_csv(res)
    assert csv.count("\ncheck,") == 8  # one-step, steps, large budget, transfer for each model


class Quantized(nn.Module):
    """round(x * 4) / 4 in front of a model: zero input gradient almost everywhere (textbook masking)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(torch.round(x * 4) / 4)


@pytest.mark.slow
def test_a_quantized_input_model_is_flagged_from_its_sweep_alone(tmp_path):
    """No [checks] table: FGSM and PGD-10 sweeps up to 64/255 on a model behind input quantization leave images
    robust at 64/255, and the large-budget check fires from the sweep itself (issue 38)."""
    from conftest import make_tiny
    from questbench.report.markdown import render_markdown

    suite = {"seed": 0, "batch_size": 32, "num_workers": 0, "clean": True, "data": {"samples": 32},
             "attacks": [{"attack": "fgsm", "eps": [0, "8/255", "64/255"]},
                         {"attack": "pgd", "eps": [0, "8/255", "64/255"]}]}
    res = questbench.evaluate(Quantized(make_tiny(seed=4).net), suite=suite, out=tmp_path / "out",
                              preprocessing={"mean": [0.5], "std": [0.5]})
    table, rows = checks_table(res.samples)
    large = [r for r in rows if r["check"] == "large budget"]
    assert {r["setting"].split()[0] for r in large} == {"fgsm", "pgd"} and all(r["flag"] for r in large)
    md = render_markdown(res)
    assert "Every check passed" not in md and "leaves images robust at a large budget" in md


def test_the_detectable_gap_matches_the_exact_mcnemar_test():
    from scipy.stats import binomtest

    from questbench.report.checks import ALPHA, min_detectable_gap_pp
    d = round(min_detectable_gap_pp(100))  # discordant samples needed, at n = 100
    assert binomtest(d, d, 0.5).pvalue < ALPHA <= binomtest(d - 1, d - 1, 0.5).pvalue
    assert min_detectable_gap_pp(1000) == pytest.approx(d / 10)


def _steps_rows(long_outcome, models: int = 8) -> list[dict]:
    """Steps-check rows of ``models`` models: PGD-short leaves 40 of 100 robust, PGD-long's records are
    ``long_outcome(model index, short records)``."""

    short = AttackConfig(attack="pgd", eps=EPS, norm="Linf", steps=10, step_size=EPS / 4, restarts=1,
                         random_start=True, loss="ce")
    long = AttackConfig(attack="pgd", eps=EPS, norm="Linf", steps=50, step_size=EPS / 4, restarts=3,
                        random_start=True, loss="ce")
    rows = []
    for m in range(models):
        rec = [dict(sample_id=f"test/{i}", label=0, pred=0, correct=bool(i < 40)) for i in range(100)]
        rows += (_check_rows(f"m{m}", "pgd-short", short, rec)
                 + _check_rows(f"m{m}", "pgd-long", long, long_outcome(m, rec)))
    return rows


def test_a_small_steps_gap_in_every_model_is_flagged_pooled():
    """Each model's PGD-long leaves 2 of 100 fewer robust than PGD-short: no model's own McNemar test can flag
    that, the sign test over 8 models does (issue 38)."""

    samples = pd.DataFrame(_steps_rows(lambda m, rec: [dict(r, correct=r["correct"] and i >= 2)
                                                       for i, r in enumerate(rec)]))
    table, long_rows = checks_table(samples)
    assert not any(r["flag"] for r in long_rows if r["check"] == "steps")
    pooled = [r for r in long_rows if r["check"] == "steps (pooled)"]
    assert pooled and pooled[0]["flag"] and "8 of 8 comparisons" in pooled[0]["sentence"]
    assert any("all models" in f for f in check_flags(samples))


def test_a_passing_pooled_steps_check_states_its_counts_and_p():
    """When the pooled sign test does not flag, the summary still says what it counted and its p (issue 38):
    4 models where PGD-long leaves one fewer robust, 4 where it leaves one more, p = 1 by the exact sign test."""
    from scipy.stats import binomtest

    from questbench.report.sections import checks_verdict

    def one_each_way(m, rec):  # odd models: PGD-long leaves one fewer robust; even ones: one more
        if m % 2:
            return [dict(r, correct=r["correct"] and i != 0) for i, r in enumerate(rec)]
        return [dict(r, correct=r["correct"] or i == 99) for i, r in enumerate(rec)]

    checks = checks_table(pd.DataFrame(_steps_rows(one_each_way)))
    pooled = [r for r in checks[1] if r["check"] == "steps (pooled)"]
    assert pooled and not pooled[0]["flag"]
    assert pooled[0]["p_value"] == pytest.approx(binomtest(4, 8, 0.5).pvalue)
    verdict = checks_verdict(checks)
    assert verdict.startswith("Every check passed")
    assert "in 4 of 8 comparisons and more in 4 (sign test p = 1" in verdict and "0.0 pp on average" in verdict
    assert verdict.endswith("no sign of it.")


def test_apgd_ce_is_checked_against_pgd_per_model_and_pooled():
    """The study's reference APGD-CE is read against PGD at the same eps like AutoAttack: one model where PGD
    leaves far fewer robust is flagged on its own; a 2-sample gap in each of 8 models only pooled (issue 35:
    the primary endpoint's attack must have converged)."""
    rng = np.random.default_rng(1)
    pgd = rng.random(1000) < 0.4
    weak = pd.DataFrame(_synthetic("m", "pgd", pgd) + _synthetic("m", "apgd-ce", pgd | (rng.random(1000) < 0.1)))
    flags = check_flags(weak)
    assert len(flags) == 1 and "APGD-CE is weaker than PGD" in flags[0]
    rows = []
    for m in range(8):
        rows += _synthetic(f"m{m}", "pgd", pgd) + _synthetic(f"m{m}", "apgd-ce", pgd | (np.arange(1000) >= 998))
    table, long_rows = checks_table(pd.DataFrame(rows))
    assert not any(r["flag"] for r in long_rows if r["check"] == "autoattack")
    pooled = [r for r in long_rows if r["check"] == "autoattack (pooled)"]
    assert pooled and pooled[0]["flag"] and "in 8 of 8 comparisons and more in 0" in pooled[0]["sentence"]
    assert pooled[0]["sentence"].endswith("the reference attack had not converged")
    # beside a flag, a pooled check that passes still states its counts (here: APGD-CE stronger everywhere)
    from questbench.report.sections import checks_verdict
    strong, top = [], np.arange(1000) < 400
    for m in range(8):
        strong += _synthetic(f"m{m}", "pgd", top) + _synthetic(f"m{m}", "apgd-ce", top & (np.arange(1000) >= 2))
    strong += _synthetic("weak", "pgd", pgd) + _synthetic("weak", "apgd-ce", pgd | (rng.random(1000) < 0.1))
    verdict = checks_verdict(checks_table(pd.DataFrame(strong)))
    assert verdict.startswith("Flagged: weak") and "no sign of it." in verdict
