"""`questbench run --reuse OLD`: a job is copied from another folder only when its identity hash equals the one
this run plans, and the folder it makes reads exactly like a folder computed from scratch."""
import json
import subprocess
import sys

import pytest

from questbench.config.suite import load_suite
from questbench.errors import QuestbenchError
from questbench.report.leaderboard import leaderboard
from questbench.report.tidy import render_csv
from questbench.run.runner import run_suite
from questbench.store.results import load_results

from conftest import write_suite

OLD = """
name = "reuse"
models = ["tiny-std", "tiny-quest"]
seed = 3
batch_size = 16
num_workers = 0
[data]
dataset = "fashion-mnist"
samples = 16
[corruptions]
names = ["contrast"]
severities = [1, 5]
samples = 8
[[attacks]]
attack = "fgsm"
eps = [0, "8/255"]
samples = 8
[[attacks]]
attack = "pgd"
eps = ["8/255"]
steps = 2
samples = 8
"""

# one corruption setting and one PGD entry are new, and the old PGD entry moves from sweep 1 to sweep 2
NEW = OLD.replace("severities = [1, 5]", "severities = [1, 3]").replace("""[[attacks]]
attack = "pgd"
""", """[[attacks]]
attack = "pgd"
eps = ["8/255"]
steps = 3
samples = 8
[[attacks]]
attack = "pgd"
""")


def _jobs(folder):
    return {f.name: json.loads(f.read_text()) for f in (folder / "jobs").glob("*.json")}


@pytest.mark.slow
def test_reuse_copies_exactly_the_identical_jobs_and_reads_like_a_fresh_run(tmp_path, tiny_pair):
    old, new, fresh = tmp_path / "old", tmp_path / "new", tmp_path / "fresh"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    run_suite(load_suite(str(write_suite(tmp_path / "a", tiny_pair, OLD))), old, device="cpu", quiet=True)
    new_suite = load_suite(str(write_suite(tmp_path / "b", tiny_pair, NEW)))
    summary = run_suite(new_suite, new, device="cpu", quiet=True, reuse=[old])
    # per model: clean, contrast-1, FGSM 0 and 8/255, old PGD-2 are reused; contrast-3 and PGD-3 are computed
    assert summary.jobs_total == 2 * 7 and summary.jobs_run == 2 * 2
    assert any("10 job(s) reused from" in n for n in summary.notes)
    run_suite(new_suite, fresh, device="cpu", quiet=True)
    assert render_csv(load_results(new)) == render_csv(load_results(fresh))
    a, b = load_results(new).samples, load_results(fresh).samples
    key = ["model", "evaluation", "setting", "sample_id"]
    assert a.sort_values(key).reset_index(drop=True).equals(b.sort_values(key).reset_index(drop=True))
    jobs, before = _jobs(new), _jobs(old)
    reused = {k: v for k, v in jobs.items() if "reused_from" in v["job"]}
    assert len(reused) == 10 and set(reused) <= set(before)
    for name, doc in reused.items():
        assert doc["records"] == before[name]["records"]
        assert doc["job"]["suite_sha256"] == new_suite.sha256 != before[name]["job"]["suite_sha256"]
        assert doc["job"]["reused_from"] == {"folder": str(old), "suite_sha256": before[name]["job"]["suite_sha256"]}
        if doc["job"]["evaluation"] == "attack" and doc["job"]["attack"] == "pgd":
            assert (before[name]["job"]["sweep"], doc["job"]["sweep"]) == (1, 2)  # the header follows this suite
    assert "- reused: 10 of the 14 jobs were copied from" in leaderboard(new)
    assert "reused" not in leaderboard(fresh)
    # a second run has nothing left to take or to compute
    again = run_suite(new_suite, new, device="cpu", quiet=True, reuse=[old])
    assert again.jobs_run == 0 and not any("reused" in n for n in again.notes)


@pytest.mark.slow
def test_an_edited_source_job_is_refused_not_copied(tmp_path, tiny_pair):
    old, new = tmp_path / "old", tmp_path / "new"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    run_suite(load_suite(str(write_suite(tmp_path / "a", tiny_pair, OLD))), old, device="cpu", quiet=True)
    victim = next((old / "jobs").glob("tiny-quest__clean*.json"))
    doc = json.loads(victim.read_text())
    doc["records"][0]["correct"] = not doc["records"][0]["correct"]
    doc["records"][0]["pred"] = doc["records"][0]["label"] if doc["records"][0]["correct"] else \
        (doc["records"][0]["label"] + 1) % 10
    victim.write_text(json.dumps(doc))
    with pytest.raises(QuestbenchError, match=r"--reuse .*old"):
        run_suite(load_suite(str(write_suite(tmp_path / "b", tiny_pair, NEW))), new, device="cpu", quiet=True,
                  reuse=[old])


def test_a_reuse_folder_that_holds_no_results_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    for src in (tmp_path / "empty", tmp_path / "missing"):
        r = subprocess.run([sys.executable, "-m", "questbench.cli", "run", "default", "--out", str(tmp_path / "o"),
                            "--reuse", str(src), "--quiet", "--ranks", "1"], capture_output=True, text=True)
        assert r.returncode != 0 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert f"--reuse {src}: not a questbench results folder" in r.stderr
        assert not (tmp_path / "o" / "jobs").exists()
