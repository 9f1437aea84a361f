import os
import signal
import subprocess
import sys
import time

import pytest

import questbench
from questbench.report.leaderboard import leaderboard
from questbench.report.tidy import render_csv
from questbench.store.results import load_results
from questbench.run.runner import run_suite
from questbench.config.suite import list_suites, load_suite, parse_suite

from conftest import children, processes_mentioning, write_suite

SUITE = """
name = "e2e"
description = "end to end on tiny random models"
models = ["tiny-std", "tiny-quest"]
seed = 3
batch_size = 16
num_workers = 0
[data]
dataset = "fashion-mnist"
samples = 24
[corruptions]
names = ["gaussian_noise", "contrast", "pixelate"]
severities = [1, 5]
samples = 12
[[attacks]]
attack = "fgsm"
eps = [0, "2/255", "8/255"]
samples = 10
[[attacks]]
attack = "pgd"
eps = [0, "2/255", "8/255"]
steps = 3
samples = 10
[diagnostics]
samples = 8
"""


@pytest.mark.slow
def test_end_to_end_run_results_and_leaderboards(tmp_path, tiny_pair):
    suite = load_suite(str(write_suite(tmp_path, tiny_pair, SUITE)))
    out = tmp_path / "out"
    summary = run_suite(suite, out, device="cpu", quiet=True)
    n_jobs = 2 * (1 + 6 + 6 + 1)
    assert summary.jobs_run == n_jobs and summary.jobs_total == n_jobs
    # the default engine (torch, constants "auto") takes CIFAR-10-C's at 28 px: no small-image warning
    assert not [n for n in summary.notes if n.startswith("warning: corruptions use ImageNet-C's constants")]
    assert questbench.load_results(out).provenance["suite"]["corruptions"]["params"] == "auto"
    res = questbench.load_results(out)
    s = res.samples
    assert len(s[(s.evaluation == "clean")]) == 2 * 24
    assert len(s[(s.evaluation == "corruption")]) == 2 * 6 * 12
    assert set(s.columns) >= {"model", "evaluation", "setting", "sample_id", "label", "pred", "correct"}
    # subsets are nested prefixes of one seeded order: attack samples are corruption samples are clean samples
    ids = res.provenance["sample_ids"]
    assert set(ids["attack[0]"]) <= set(ids["corruption"]) <= set(ids["clean"])
    assert res.provenance["versions"]["pyautoattack"] and res.provenance["models"]["tiny-quest"]["sha256"]
    assert len(res.diagnostics) == 2 * 2  # two layers per tiny model
    # eps = 0 equals clean accuracy on the same samples
    att = s[(s.evaluation == "attack") & (s.eps == 0)]
    assert (att.correct == att.clean_correct).all()
    again = run_suite(suite, out, device="cpu", quiet=True)
    assert again.jobs_run == 0 and again.jobs_skipped == n_jobs
    md = leaderboard(out, "md", str(tmp_path / "lb.md"))
    sections = [line for line in md.splitlines() if line.startswith("## ")]
    assert sections[:6] == ["## Headline", "## Clean accuracy", "## Corruptions in detail", "## Attack sweeps",
                            "## Attack checks",
                            "## Attention mechanism"] and "## Paired: tiny-quest minus tiny-std" in sections
    for name in ("corruptions", "attacks", "attention", "deltas"):
        assert (tmp_path / f"lb_{name}.png").is_file()
    csv1 = render_csv(load_results(out))
    assert csv1 == render_csv(load_results(out))
    assert csv1.splitlines()[0].startswith("table,model")
    r = _run_cli(["leaderboard", str(out), "--format", "rich"], env={**os.environ, "COLUMNS": "80"})
    assert r.returncode == 0 and "Clean accuracy" in r.stdout and "tiny-quest" in r.stdout
    # at 80 columns every name and setting stays whole: labels fold, nothing is cut
    assert "…" not in r.stdout and max(len(line) for line in r.stdout.splitlines()) <= 80
    assert "PGD-3 Linf (step 0.833 eps) 10*" in r.stdout and "gaussian_noise" in r.stdout
    r = _run_cli(["leaderboard", str(out), "--format", "csv", "--output", str(tmp_path / "lb.csv")])
    assert r.returncode == 0 and (tmp_path / "lb.csv").read_text() == csv1
    r = _run_cli(["compare", str(out), "tiny-std", "tiny-quest"], env={**os.environ, "COLUMNS": "80"})
    assert r.returncode == 0 and "Holm" in r.stdout and "…" not in r.stdout
    assert "gaussian_noise severity 5" in r.stdout and "PGD-3 Linf (step 0.833 eps)" in r.stdout
    r = _run_cli(["models", "--registry", str(tiny_pair)], env={**os.environ, "COLUMNS": "80"})
    assert r.returncode == 0 and "…" not in r.stdout
    assert all(name in r.stdout for name in ("tiny-quest", "fmnist-vit-standard-s2", "deit_tiny_patch16_224.fb_in1k"))
    r = _run_cli(["leaderboard", str(out), "--format", "pdf"])
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "'pdf' is not one of 'md', 'rich', 'csv', 'html'" in r.stderr


@pytest.mark.parametrize("corruptions,side,warns", [
    ('engine = "imagecorruptions"', 28, True), ('engine = "torch"\nparams = "imagenet-c"', 64, True),
    ('engine = "torch"\nparams = "cifar-c"', 28, False), ('engine = "torch"\nparams = "auto"', 28, False),
    ('engine = "imagecorruptions"', 65, False), ('mode = "cifar-c"\nroot = "x"', 32, False)])
def test_small_images_with_imagenet_c_constants_warn(corruptions, side, warns):
    import numpy as np

    from questbench.data.arrays import ArrayDataset
    from questbench.run.prepare import small_image_warning
    suite = parse_suite(f'models = ["m"]\n[corruptions]\n{corruptions}\n', "t.toml")
    images = ArrayDataset(np.zeros((2, side, side), np.uint8), np.zeros(2, int), "t", "t")
    warning = small_image_warning(suite, images)
    assert bool(warning) == warns and (not warns or f"{side} px" in warning)
    assert small_image_warning(parse_suite('models = ["m"]\n', "t.toml"), images) is None


def _run_cli(args, **kw):
    return subprocess.run([sys.executable, "-m", "questbench.cli", *args], capture_output=True, text=True, **kw)


def _run_then_kill(suite_path, out, threads: int, pattern: str, at_least: int) -> None:
    """`questbench run` in a subprocess, SIGKILLed once ``at_least`` job files matching ``pattern`` exist."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen([sys.executable, "-m", "questbench.cli", "run", str(suite_path), "--out", str(out),
                             "--device", "cpu", "--quiet"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if len(list((out / "jobs").glob(pattern))) >= at_least:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_kill_and_resume_gives_identical_table(tmp_path, tiny_pair):
    suite_path = write_suite(tmp_path, tiny_pair, SUITE)
    ref = tmp_path / "ref"
    run_suite(load_suite(str(suite_path)), ref, device="cpu", quiet=True)
    out = tmp_path / "killed"
    _run_then_kill(suite_path, out, threads=1, pattern="*.json", at_least=5)
    done_before = len(list((out / "jobs").glob("*.json")))
    assert 0 < done_before < 28
    summary = run_suite(load_suite(str(suite_path)), out, device="cpu", quiet=True)
    assert summary.jobs_skipped == done_before
    assert render_csv(load_results(out)) == render_csv(load_results(ref))
    a, b = load_results(out).samples, load_results(ref).samples
    key = ["model", "setting", "sample_id"]
    assert a.sort_values(key).reset_index(drop=True)[key + ["pred", "correct"]].equals(
        b.sort_values(key).reset_index(drop=True)[key + ["pred", "correct"]])


@pytest.mark.slow
def test_unknown_model_fails_before_running(tmp_path, tiny_pair):
    p = write_suite(tmp_path, tiny_pair, SUITE.replace('"tiny-quest"', '"no-such-model"'))
    r = _run_cli(["run", str(p), "--out", str(tmp_path / "o"), "--quiet"])
    assert r.returncode != 0 and "unknown model 'no-such-model'" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "jobs").exists()


def test_builtin_suites_validate():
    names = [n for n, _ in list_suites()]
    assert {"default", "fmnist-full", "paper-imagenet"} <= set(names)
    for n in names:
        s = load_suite(n)
        assert s.models and s.description


@pytest.mark.slow
def test_paper_suite_fails_clearly_without_data(tmp_path):
    r = _run_cli(["run", "paper-imagenet", "--out", str(tmp_path / "o"), "--quiet"], cwd=tmp_path)
    assert r.returncode != 0 and "image folder not found" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_cli_lists_and_leaderboard_errors(tmp_path):
    r = _run_cli(["--help"])
    assert r.returncode == 0
    for cmd in ("run", "leaderboard", "compare", "models", "suites", "train", "doctor"):
        assert cmd in r.stdout
    r = _run_cli(["leaderboard", str(tmp_path)])
    assert r.returncode != 0 and "holds no questbench results" in r.stderr
    r = _run_cli(["suites"])
    assert "default" in r.stdout and "paper-imagenet" in r.stdout


CORRUPTIONS_ONLY = """
name = "slow-corruptions"
models = ["tiny-std"]
batch_size = 8
num_workers = 2
[data]
samples = 400
[corruptions]
names = ["zoom_blur", "glass_blur", "elastic_transform"]
severities = [5]
"""


@pytest.mark.slow
@pytest.mark.parametrize("sig, code, message", [(signal.SIGKILL, -9, None),
                                                (signal.SIGTERM, 143, "terminated; finished jobs are kept"),
                                                (signal.SIGINT, 130, "interrupted; finished jobs are kept")])
def test_no_process_outlives_the_run_during_corruptions(tmp_path, tiny_pair, sig, code, message):
    """SIGKILL, SIGTERM or Ctrl-C (SIGINT to the whole process group, as a terminal sends it) while DataLoader
    workers corrupt images: every process ends with the run; SIGTERM and Ctrl-C say how to resume."""
    suite_path = write_suite(tmp_path, tiny_pair, CORRUPTIONS_ONLY)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "questbench.cli", "run", str(suite_path), "--out", str(out),
                             "--device", "cpu", "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(children(proc.pid)) < 2 and proc.poll() is None:
        time.sleep(0.05)
    assert len(children(proc.pid)) >= 2, "the corruption workers never started"
    time.sleep(0.5)
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code
    if message:
        assert err.strip().splitlines() == [err.strip().splitlines()[-1]] and message in err
        assert "Traceback" not in err
    time.sleep(1.0)
    assert processes_mentioning(str(out)) == []


@pytest.mark.slow
def test_ctrl_c_while_the_ranks_start_is_one_line(tmp_path, tiny_pair):
    """Ctrl-C as soon as the launcher has started its ranks, while they are still importing: the launcher stops
    them with SIGTERM and says how to resume, and no rank prints a KeyboardInterrupt traceback (torch's launcher
    passes on the signals it handles, and by default it handles SIGINT)."""
    suite_path = write_suite(tmp_path, tiny_pair, CORRUPTIONS_ONLY)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "questbench.cli", "run", str(suite_path), "--out", str(out),
                             "--device", "cpu", "--quiet", "--ranks", "2"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(children(proc.pid)) < 2 and proc.poll() is None:
        time.sleep(0.01)
    assert len(children(proc.pid)) >= 2, "the ranks never started"
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().splitlines() == ["interrupted; finished jobs are kept: run the same command again to resume"]
    time.sleep(1.0)
    assert processes_mentioning(str(out)) == []


@pytest.mark.slow
def test_a_resumed_folder_with_nothing_new_keeps_its_pages(tmp_path, tiny_pair):
    """A quiet resume that runs no job leaves leaderboard.md/.html as they are (a study resumes its finished seed
    folders so); one whose page is missing, or that ran a job, renders again."""
    p = write_suite(tmp_path, tiny_pair, SUITE)
    out = tmp_path / "o"
    args = ["run", str(p), "--out", str(out), "--quiet", "--device", "cpu", "--ranks", "1"]
    assert _run_cli(args).returncode == 0
    board = out / "leaderboard.md"
    board.write_text("left as it was\n")
    r = _run_cli(args)
    assert r.returncode == 0 and "kept" in r.stderr and board.read_text() == "left as it was\n"
    (out / "leaderboard.html").unlink()
    r = _run_cli(args)
    assert r.returncode == 0 and "kept" not in r.stderr and board.read_text().startswith("# questbench")
    assert (out / "leaderboard.html").is_file()
    # --no-pages: the results only (a seed folder of a study, joined into one page later)
    bare = tmp_path / "bare"
    r = _run_cli(["run", str(p), "--out", str(bare), "--quiet", "--device", "cpu", "--ranks", "1", "--no-pages"])
    assert r.returncode == 0 and "no pages written" in r.stderr and (bare / "jobs").is_dir()
    assert not (bare / "leaderboard.md").exists() and not (bare / "leaderboard.html").exists()
