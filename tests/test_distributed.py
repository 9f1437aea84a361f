"""Plan / execute a shard / merge, under torchrun (gloo ranks on CPU) and under ranks `questbench run` starts."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from questbench.run.distributed import Ranks
from questbench.run.plan import share
from questbench.report.tidy import render_csv
from questbench.store.results import load_results
from questbench.run.runner import Runner
from questbench.config.suite import load_suite
from conftest import children, processes_mentioning, write_suite, write_tiny_pair

TORCHRUN = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
QUESTBENCH = os.path.join(os.path.dirname(sys.executable), "questbench")

# one model, so that its jobs' chunks are split between ranks and merged (two models' jobs would often each
# land whole on one rank); several chunks per job (batch_size 8)
SHARDED = """
name = "sharded"
models = ["tiny-std"]
seed = 4
batch_size = 8
num_workers = 0
[data]
dataset = "fashion-mnist"
samples = 40
[corruptions]
names = ["gaussian_noise", "pixelate"]
severities = [2, 5]
samples = 20
[[attacks]]
attack = "pgd"
eps = [0, "2/255", "8/255"]
steps = 3
samples = 24
[diagnostics]
samples = 8
"""

SLOW = SHARDED.replace("steps = 3", "steps = 80").replace('eps = [0, "2/255", "8/255"]',
                                                          'eps = ["1/255", "2/255", "4/255", "8/255"]')


def _single(suite_path, out):
    """The reference: one single-threaded process (a torchrun rank is single-threaded too)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([QUESTBENCH, "run", str(suite_path), "--out", str(out), "--device", "cpu", "--quiet"],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return render_csv(load_results(out))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The single-process run of a suite text, (its csv, its folder), made once per module for all the tests
    that compare against it (the same tiny models: they are made from a seed)."""
    folder = tmp_path_factory.mktemp("reference")
    registry = write_tiny_pair(folder)
    done: dict[str, tuple] = {}

    def run(text: str) -> tuple:
        if text not in done:
            sub = folder / f"suite{len(done)}"
            sub.mkdir()
            done[text] = _single(write_suite(sub, registry, text), sub / "out"), sub / "out"
        return done[text]
    return run


def _torchrun(suite_path, out, nproc=2, **kw):
    return subprocess.Popen([TORCHRUN, f"--nproc_per_node={nproc}", "--no-python", QUESTBENCH, "run",
                             str(suite_path), "--out", str(out), "--device", "cpu", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_plan_is_pure_and_shares_cover_every_unit_once(tmp_path, tiny_pair):
    suite = load_suite(str(write_suite(tmp_path, tiny_pair, SHARDED)))
    plans = []
    for _ in range(2):
        r = Runner(suite, tmp_path / "o", device="cpu", quiet=True)
        r.prepare()
        plans.append([(j.job_id, j.key_sha256, j.spans()) for j in r.jobs()])
    assert plans[0] == plans[1] and len(plans[0]) == 1 + 4 + 3 + 1
    jobs = r.jobs()
    every = sorted((j.job_id, a, b) for j in jobs for a, b in j.spans())
    for world in (1, 2, 3, 5):
        shares = share(jobs, world)
        assert shares == share(jobs, world)  # the same on every rank
        got = sorted((u.job_id, u.start, u.stop) for s in shares for u in s)
        assert got == every
    two = share(jobs, 2)
    assert all(two[0]) and all(two[1])
    # a corruption setting's chunk goes to one rank for every model; the 40 clean samples split 24/16
    clean = {r: sum(u.stop - u.start for u in s if u.kind == "clean") for r, s in enumerate(two)}
    assert sorted(clean.values()) == [16, 24]


@pytest.mark.slow
def test_torchrun_two_gloo_ranks_give_the_single_process_csv(tmp_path, tiny_pair, reference):
    suite_path = write_suite(tmp_path, tiny_pair, SHARDED)
    ref, one = reference(SHARDED)
    proc = _torchrun(suite_path, tmp_path / "two")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert render_csv(load_results(tmp_path / "two")) == ref
    prov = json.loads((tmp_path / "two" / "provenance.json").read_text())
    assert prov["ranks"] == 2
    assert not (tmp_path / "two" / "shards").exists()  # every part merged, the folder removed
    # the per-sample table too, row for row
    a, b = (load_results(d).samples for d in (one, tmp_path / "two"))
    key = ["evaluation", "setting", "sample_id"]
    assert a.sort_values(key).reset_index(drop=True).equals(b.sort_values(key).reset_index(drop=True))


@pytest.mark.slow
def test_a_rank_killed_mid_run_resumes_from_finished_shards(tmp_path, tiny_pair, reference):
    suite_path = write_suite(tmp_path, tiny_pair, SLOW)
    ref, _ = reference(SLOW)
    out = tmp_path / "two"
    proc = _torchrun(suite_path, out, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if list((out / "shards").glob("*attack*.json")):
            break
        time.sleep(0.02)
    ranks = children(proc.pid)
    assert len(ranks) == 2 and proc.poll() is None, "no attack part was written before the run ended"
    os.kill(int(ranks[1]), signal.SIGKILL)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    parts = sorted(p.name for p in (out / "shards").glob("*.json"))
    jobs_before = {p.name for p in (out / "jobs").glob("*.json")}
    assert parts and len(jobs_before) < 1 + 4 + 4 + 1
    time.sleep(0.5)
    assert processes_mentioning(str(out)) == []
    proc = _torchrun(suite_path, out)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert render_csv(load_results(out)) == ref


@pytest.mark.slow
def test_local_ranks_match_one_process_and_report_errors_once(tmp_path, tiny_pair, reference):
    """`questbench run --ranks 2` starts two ranks itself (torchrun's launcher API): same csv; a user error in
    preparation is one line, printed once."""
    suite_path = write_suite(tmp_path, tiny_pair, SHARDED)
    ref, _ = reference(SHARDED)
    r = subprocess.run([QUESTBENCH, "run", str(suite_path), "--out", str(tmp_path / "two"), "--device", "cpu",
                        "--quiet", "--ranks", "2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert render_csv(load_results(tmp_path / "two")) == ref
    assert json.loads((tmp_path / "two" / "provenance.json").read_text())["ranks"] == 2
    bad = write_suite(tmp_path, tiny_pair, SHARDED.replace('"tiny-std"', '"no-such-model"'))
    r = subprocess.run([QUESTBENCH, "run", str(bad), "--out", str(tmp_path / "bad"), "--device", "cpu",
                        "--quiet", "--ranks", "2"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert r.stderr.startswith("error: unknown model 'no-such-model'") and "Traceback" not in r.stderr


@pytest.mark.slow
def test_a_killed_launcher_leaves_nothing_outside_out_and_resumes(tmp_path, tiny_pair, reference):
    """SIGKILL of `questbench run --ranks 2` itself: its ranks end, nothing is left in the system temp folder
    (the launcher's files live in OUT/.ranks), and the same command resumes to the single-process csv."""
    suite_path = write_suite(tmp_path, tiny_pair, SLOW)
    ref, _ = reference(SLOW)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "two"
    cmd = [QUESTBENCH, "run", str(suite_path), "--out", str(out), "--device", "cpu", "--quiet", "--ranks", "2"]
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not list((out / "shards").glob("*attack*.json")):
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before an attack part was written"
    assert (out / ".ranks").is_dir()
    proc.kill()
    proc.communicate(timeout=60)
    deadline = time.time() + 30
    while time.time() < deadline and processes_mentioning(str(out)):
        time.sleep(0.2)
    assert processes_mentioning(str(out)) == []
    assert not any(p.name.startswith("questbench-ranks") for p in tmp.iterdir())
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert render_csv(load_results(out)) == ref and not (out / ".ranks").exists()


@pytest.mark.slow
def test_python_models_refuse_torchrun(tmp_path, tiny_pair):
    from questbench.errors import QuestbenchError
    suite = load_suite(str(write_suite(tmp_path, tiny_pair, SHARDED)))
    with pytest.raises(QuestbenchError, match="one process"):
        Runner(suite, tmp_path / "o", device="cpu", models={"m": object()}, ranks=Ranks(0, 2))
