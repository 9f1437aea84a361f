"""One leaderboard from several results folders (issue 38): runs of one suite on other machines, or of other
models on the same data, joined after each folder is verified; a mixture of configurations is refused in one
line naming the difference."""
import json

import pytest

import questbench
from questbench.cli import main
from questbench.config.suite import parse_suite
from questbench.errors import QuestbenchError
from questbench.run.runner import run_suite

from test_bad_inputs import assert_one_line_error, cli

BODY = ('num_workers = 0\n[data]\nsamples = 8\n[corruptions]\nnames = ["contrast", "fog"]\nseverities = [1, 3]\n'
        '[[attacks]]\nattack = "fgsm"\neps = ["2/255", "8/255"]\n')


def _run(tmp_path, registry, models, folder, body=BODY):
    text = f'registry = ["{registry}"]\nmodels = {json.dumps(models)}\n' + body
    out = tmp_path / folder
    run_suite(parse_suite(text, f"{folder}.toml"), out, device="cpu", quiet=True)
    return out


@pytest.fixture
def runs(tmp_path, tiny_pair):
    both = _run(tmp_path, tiny_pair, ["tiny-std", "tiny-quest"], "both")
    std = _run(tmp_path, tiny_pair, ["tiny-std"], "std-only")
    quest = _run(tmp_path, tiny_pair, ["tiny-quest"], "quest-only")
    return both, std, quest


@pytest.mark.slow
def test_two_folders_give_the_leaderboard_of_one_run(runs, tmp_path, capsys):
    both, std, quest = runs
    from questbench.report.leaderboard import leaderboard
    assert leaderboard([std, quest], "csv") == leaderboard(both, "csv")
    joined = questbench.load_results([std, quest])
    assert sorted(joined.provenance["models"]) == ["tiny-quest", "tiny-std"]
    assert joined.provenance["models"]["tiny-std"]["folder"] == str(std)
    assert questbench.compare([std, quest], "tiny-std", "tiny-quest").equals(
        questbench.compare(both, "tiny-std", "tiny-quest"))
    with pytest.raises(SystemExit) as exc:  # the command line takes the folders the same way
        main(["leaderboard", str(std), str(quest), "--output", str(tmp_path / "lb.md")])
    assert exc.value.code == 0
    page = (tmp_path / "lb.md").read_text()
    assert f"results folder `{std}`" in page and f"results folder `{quest}`" in page
    with pytest.raises(SystemExit) as exc:
        main(["compare", str(std), str(quest), "tiny-std", "tiny-quest"])
    assert exc.value.code == 0 and "tiny-quest minus tiny-std" in capsys.readouterr().out


def test_results_from_another_device_are_named_beside_their_pair(runs):
    from questbench.report.markdown import render_markdown
    from questbench.store.combine import combine_results
    _, std, quest = runs
    a, b = questbench.load_results(std), questbench.load_results(quest)
    b.provenance["device_name"] = "NVIDIA H200"  # as a run on a GPU machine would record it
    page = render_markdown(combine_results([std, quest], [a, b]))
    assert "tiny-quest ran on NVIDIA H200, tiny-std on cpu" in page.replace("\n> ", " ")


@pytest.mark.parametrize("change, named", [
    ("seed = 1\n", "seed 0 -> 1"),
    (BODY.replace("samples = 8", "samples = 6"), "data.samples 8 -> 6"),
    (BODY.replace('eps = ["2/255", "8/255"]', 'eps = ["2/255", "4/255"]'), "attacks.0"),
    (BODY.replace('"fog"]', '"snow"]'), "corruptions.names"),
])
@pytest.mark.slow
def test_a_mixture_of_configurations_is_refused_in_one_line(change, named, tmp_path, tiny_pair, capsys):
    std = _run(tmp_path, tiny_pair, ["tiny-std"], "std-only")
    body = change if change.startswith("num_workers") else change + BODY
    quest = _run(tmp_path, tiny_pair, ["tiny-quest"], "quest-other", body)
    code, _, err = cli(["leaderboard", std, quest, "--format", "csv"], capsys)
    assert_one_line_error(code, err, contains="cannot join")
    assert named in err


def test_a_model_given_twice_and_a_damaged_folder_are_refused(runs, capsys):
    both, std, quest = runs
    code, _, err = cli(["leaderboard", both, std, "--format", "csv"], capsys)
    assert_one_line_error(code, err, contains="'tiny-std' is in both")
    job = sorted((quest / "jobs").glob("*.json"))[0]
    doc = json.loads(job.read_text())
    doc["records"][0]["pred"] = (doc["records"][0]["pred"] + 1) % 10
    doc["records"][0]["correct"] = doc["records"][0]["pred"] == doc["records"][0]["label"]
    job.write_text(json.dumps(doc))  # each folder is verified on its own before any joining
    with pytest.raises(QuestbenchError, match="digest mismatch"):
        questbench.load_results([std, quest])


@pytest.mark.slow
def test_a_page_of_some_models_equals_a_run_of_those_models(runs, tmp_path, capsys):
    """`--models`: the standard/QUEST pairs of a four-kind study get their own page without running again."""
    both, std, _ = runs
    from questbench.report.leaderboard import leaderboard
    assert leaderboard(both, "csv", models=["tiny-std"]) == leaderboard(std, "csv")
    assert leaderboard(both, "csv", models=["tiny-quest", "tiny-std"]) == leaderboard(both, "csv")
    page = leaderboard(both, "md", models=["tiny-std"])
    assert "- models: 1 of the 2 in these results (`--models`)" in page and "`tiny-quest`" not in page
    code, _, err = cli(["leaderboard", both, "--models", "tiny-std,nope", "--format", "csv"], capsys)
    assert_one_line_error(code, err, contains="'nope' is not in these results")
