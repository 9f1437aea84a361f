"""A result is reused only for exactly the configuration that made it; nothing from another one is mixed in."""
import re
import threading

import pytest

from questbench.errors import QuestbenchError
from questbench.run.outdir import exclusive
from questbench.report.tidy import render_csv
from questbench.store.results import load_results
from questbench.run.runner import run_suite
from questbench.config.suite import parse_suite

BASE = """
models = ["tiny-std", "tiny-quest"]
seed = {seed}
batch_size = 8
num_workers = 0
[data]
samples = {samples}
[[attacks]]
attack = "fgsm"
eps = [{eps}]
samples = 6
"""


def suite(registry, seed=1, samples=12, eps='"2/255"'):
    return parse_suite(f'registry = ["{registry}"]\n' + BASE.format(seed=seed, samples=samples, eps=eps), "t.toml")


def run(s, out, **kw):
    return run_suite(s, out, device="cpu", quiet=True, **kw)


@pytest.mark.parametrize("change, named", [
    (dict(seed=2), "seed 1 -> 2"),
    (dict(samples=10), "data.samples 12 -> 10"),
    (dict(eps='"4/255"'), "eps"),
])
def test_another_configuration_is_refused_naming_the_difference(tmp_path, tiny_pair, change, named):
    out = tmp_path / "out"
    first = run(suite(tiny_pair), out)
    assert first.jobs_run == 4
    before = render_csv(load_results(out))
    with pytest.raises(QuestbenchError, match=re.escape(named)):
        run(suite(tiny_pair, **change), out)
    assert render_csv(load_results(out)) == before  # untouched
    again = run(suite(tiny_pair), out)  # the same configuration resumes: nothing to do
    assert again.jobs_run == 0 and again.jobs_skipped == 4


def test_overwrite_moves_old_results_aside_and_never_mixes(tmp_path, tiny_pair):
    out = tmp_path / "out"
    run(suite(tiny_pair, seed=1), out)
    old_ids = set(load_results(out).samples.sample_id)
    summary = run(suite(tiny_pair, seed=2), out, overwrite=True)
    assert summary.jobs_run == 4 and summary.notes and "moved to" in summary.notes[0]
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("out.replaced-")]
    assert len(aside) == 1 and set(load_results(aside[0]).samples.sample_id) == old_ids
    res = load_results(out)
    assert res.provenance["seed"] == 2 and len(res.samples) == 2 * 12 + 2 * 6
    assert set(res.samples[res.samples.evaluation == "clean"].sample_id) == set(res.provenance["sample_ids"]["clean"])


def test_limit_then_full_run_is_refused(tmp_path, tiny_pair):
    out = tmp_path / "out"
    run_suite(suite(tiny_pair), out, device="cpu", quiet=True, limit=3)
    assert len(load_results(out).samples.query("evaluation == 'clean'")) == 2 * 3
    with pytest.raises(QuestbenchError, match="limit 3 -> null"):
        run(suite(tiny_pair), out)


def test_job_identity_covers_what_determines_rows(tmp_path, tiny_pair):
    """Each ingredient of a job's rows changes its id; a changed checkpoint changes the run's configuration."""
    from questbench.run.runner import Runner

    def ids(s, **kw):
        r = Runner(s, tmp_path / "x", device="cpu", quiet=True, **kw)
        r.prepare()
        return {(j.model, j.evaluation): j.job_id for j in r.jobs()}

    base = ids(suite(tiny_pair))
    for other in (ids(suite(tiny_pair, seed=2)), ids(suite(tiny_pair), limit=5)):
        assert set(base.values()).isdisjoint(other.values())
    fewer_clean = ids(suite(tiny_pair, samples=10))
    assert fewer_clean[("tiny-std", "clean")] != base[("tiny-std", "clean")]
    # the 6 attack samples are the same prefix of the seeded order either way: the same job, rightly
    assert fewer_clean[("tiny-std", "attack")] == base[("tiny-std", "attack")]
    changed_eps = ids(suite(tiny_pair, eps='"4/255"'))
    assert changed_eps[("tiny-std", "attack")] != base[("tiny-std", "attack")]
    assert changed_eps[("tiny-std", "clean")] == base[("tiny-std", "clean")]  # clean rows do not depend on eps
    out = tmp_path / "out"
    run(suite(tiny_pair), out)
    weights = tmp_path / "tiny-quest.safetensors"
    from questbench.models.build import load_checkpoint, save_checkpoint
    m = load_checkpoint(weights)
    with __import__("torch").no_grad():
        next(m.net.parameters()).add_(1.0)
    save_checkpoint(m, weights)
    with pytest.raises(QuestbenchError, match="models.tiny-quest"):
        run(suite(tiny_pair), out)


def test_two_checkpoints_with_one_name_are_an_error(tmp_path, tiny_pair):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        for ext in (".safetensors", ".json"):
            (d / f"m{ext}").write_bytes((tmp_path / f"tiny-std{ext}").read_bytes())
    s = parse_suite(f'models = ["{a / "m.safetensors"}", "{b / "m.safetensors"}"]\n[data]\nsamples = 2\n', "t.toml")
    with pytest.raises(QuestbenchError, match=f"{a / 'm.safetensors'} and {b / 'm.safetensors'}"):
        run(s, tmp_path / "out")


def test_one_run_per_folder(tmp_path, tiny_pair):
    out = tmp_path / "out"
    held, release = threading.Event(), threading.Event()

    def hold():
        with exclusive(out):
            held.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(10)
    try:
        with pytest.raises(QuestbenchError, match="in use by another questbench run"):
            run(suite(tiny_pair), out)
    finally:
        release.set()
        t.join()
    assert run(suite(tiny_pair), out).jobs_run == 4
