"""A job's results are reused only for the exact model that made them: its weights, its name, and its
architecture and preprocessing (attention kind, mean/std, input size), not the weights file alone (issue 36)."""
from __future__ import annotations

import pytest

import questbench
from conftest import make_tiny, write_tiny_pair
from questbench.errors import QuestbenchError
from questbench.models.attention import set_attention
from questbench.run.runner import run_suite
from questbench.config.suite import parse_suite
from questbench.store.results import load_results

CLEAN = """
seed = 1
batch_size = 8
num_workers = 0
[data]
samples = 8
"""


def _suite(registry, models):
    names = ", ".join(f'"{m}"' for m in models)
    return parse_suite(f'registry = ["{registry}"]\nmodels = [{names}]\n' + CLEAN, "t.toml")


def test_a_changed_registry_spec_is_not_served_old_results(tmp_path):
    reg = write_tiny_pair(tmp_path)
    out = tmp_path / "out"
    run_suite(_suite(reg, ["tiny-std"]), out, device="cpu", quiet=True)
    text = reg.read_text()
    first = text.split("[[model]]")[1]  # tiny-std's entry: now declared QUEST with another mean
    reg.write_text(text.replace(first, first.replace('attention = "standard"', 'attention = "quest"')
                                .replace("mean = [0.5]", "mean = [0.9]")))
    with pytest.raises(QuestbenchError, match="another configuration.*architecture"):
        run_suite(_suite(reg, ["tiny-std"]), out, device="cpu", quiet=True)
    fresh = run_suite(_suite(reg, ["tiny-std"]), tmp_path / "fresh", device="cpu", quiet=True)
    assert fresh.jobs_run == 1


def test_evaluate_after_set_attention_is_not_served_old_results(tmp_path):
    net = make_tiny("standard", seed=3).net
    out = tmp_path / "ext"
    suite = {"seed": 1, "batch_size": 8, "num_workers": 0, "data": {"samples": 8}}
    questbench.evaluate(net, suite=suite, out=out, preprocessing={"mean": [0.5], "std": [0.5]})
    set_attention(net, "quest")  # same state_dict, another attention
    with pytest.raises(QuestbenchError, match="another configuration"):
        questbench.evaluate(net, suite=suite, out=out, preprocessing={"mean": [0.5], "std": [0.5]})
    set_attention(net, "standard")
    with pytest.raises(QuestbenchError, match="another configuration"):  # same weights, new preprocessing
        questbench.evaluate(net, suite=suite, out=out, preprocessing={"mean": [0.2], "std": [0.5]})


def test_two_names_that_slug_alike_on_one_file_are_two_models(tmp_path):
    reg = write_tiny_pair(tmp_path)
    entry = reg.read_text().split("[[model]]")[1]
    reg.write_text("\n".join("[[model]]" + entry.replace('name = "tiny-std"', f'name = "{n}"')
                             .replace('pair = "tiny-quest"\n', "") for n in ("w a", "w_a")))
    out = tmp_path / "out"
    summary = run_suite(_suite(reg, ["w a", "w_a"]), out, device="cpu", quiet=True)
    assert summary.jobs_total == 2 and summary.jobs_run == 2
    res = load_results(out)
    assert sorted(res.samples.model.unique()) == ["w a", "w_a"] and not res.missing_jobs
    assert len(list((out / "jobs").glob("*.json"))) == 2
