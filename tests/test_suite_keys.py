"""Every key a suite accepts changes what is computed and the job's identity, or is refused, or is named below as
one that by design computes nothing (with the reason): walked over the schema, so a new key that is recorded
and ignored cannot slip in."""
from __future__ import annotations

import copy
from typing import Any, get_args

import pytest
from pydantic import BaseModel

import questbench.evaluators.attacks as attacks_mod
import questbench.evaluators.clean as clean_mod
import questbench.evaluators.corruptions as corruptions_mod
import questbench.evaluators.diagnostics as diagnostics_mod
import questbench.evaluators.patch as patch_mod
from questbench.errors import QuestbenchError
from questbench.run.runner import Runner
from questbench.config.suite import Suite, suite_from

# keys that choose data or where things come from, or how the work is spread: they do not change what one
# job computes from its inputs, and the inputs they select are identified by content in every job's key
NOT_COMPUTING = {
    "name": "a label for the results folder and leaderboard",
    "description": "prose",
    "models": "which models run; each model's weights hash is in its jobs' keys",
    "registry": "where model names are looked up; the weights hash is in the key",
    "device": "where the jobs run; the device kind is in every job's key",
    "num_workers": "data-loading processes; records are identical for any count (tests/test_suite_runner.py)",
    "data.dataset": "selects the data: its content hash and sample ids are in every job's key",
    "data.split": "selects the data: content hash and sample ids are in the key",
    "data.root": "where the data is read from: content hash and sample ids are in the key",
    "data.classes": "the class order of an image folder: the labels are in the content hash",
    "data.resize": "the view of an image folder: resize and crop are in its content hash (run.prepare."
                   "dataset_fingerprint), so every job's key",
    "data.crop": "as data.resize",
    "corruptions.root": "released corruption files: their location is in the corruption jobs' key",
    "shifts": "distribution-shift sets from disk, each identified by content (tests/test_shifts.py)",
    "study": "which computed rows are the study's primary endpoints: it changes the report (tests/test_study.py), "
             "not a job, and it is recorded in the run configuration, so a changed study is a new folder",
    "study.primary": "as study",
    "study.margin_pp": "as study",
    "calibration.bins": "the expected calibration error's bins: the report computes ECE from the stored per-image "
                        "probabilities (tests/test_calibration.py); recorded in the run configuration",
}

BASE: dict[str, Any] = {"seed": 1, "batch_size": 4, "num_workers": 0, "data": {"samples": 4}}
SECTIONS = {
    "clean": {},
    "corruptions": {"clean": False, "corruptions": {"names": ["fog"], "severities": [1]}},
    "attacks": {"clean": False, "attacks": [{"attack": "pgd", "eps": ["2/255"], "steps": 2}]},
    "patch": {"clean": False, "attacks": [{"attack": "patch", "patches": [1], "steps": 2, "loss": "attention"}]},
    "diagnostics": {"clean": False, "diagnostics": {"samples": 3}},
    "checks": {"clean": False, "models": ["tiny-std", "tiny-quest"],  # a pair: the transfer check needs one
               "checks": {"samples": 4, "steps": 2, "long_steps": 3, "long_restarts": 2}},
}
# key -> (section of the base suite it applies to, non-default value)
VARIANTS: dict[str, tuple[str, Any]] = {
    "seed": ("attacks", 2),
    "batch_size": ("clean", 2),
    "precision": ("clean", "bf16"),
    "data.samples": ("clean", 3),
    "clean": ("clean", False),
    "clean.enabled": ("clean", {"enabled": False}),
    "corruptions.names": ("corruptions", ["contrast"]),
    "corruptions.severities": ("corruptions", [4]),
    "corruptions.mode": ("corruptions", "faithful"),
    "corruptions.samples": ("corruptions", 3),
    "corruptions.engine": ("corruptions", "imagecorruptions"),
    "corruptions.params": ("corruptions", "cifar-c"),
    "attacks.attack": ("attacks", "fgsm"),
    "attacks.eps": ("attacks", ["4/255"]),
    "attacks.norm": ("attacks", "L2"),
    "attacks.steps": ("attacks", 3),
    "attacks.step_size": ("attacks", "1/255"),
    "attacks.step_size_ratio": ("attacks", 0.5),
    "attacks.restarts": ("attacks", 2),
    "attacks.random_start": ("attacks", False),
    "attacks.loss": ("attacks", "dlr"),
    "attacks.stop_at_success": ("attacks", True),
    "attacks.samples": ("attacks", 3),
    "attacks.batch_size": ("attacks", 2),
    "attacks.patches": ("patch", [2]),
    "attacks.patch_size": ("patch", 2),
    "attacks.position": ("patch", "fixed"),
    "attacks.layers": ("patch", [0]),
    "attacks.halve_every": ("patch", 1),
    "diagnostics.samples": ("diagnostics", 2),
    "checks.samples": ("checks", 3),
    "checks.eps": ("checks", "4/255"),
    "checks.steps": ("checks", 3),
    "checks.long_steps": ("checks", 4),
    "checks.long_restarts": ("checks", 1),
    "checks.large_eps": ("checks", "32/255"),
    "checks.transfer": ("checks", False),
    "checks.stop_at_success": ("checks", True),
    "calibration": ("clean", {}),
}


def _models_in(t) -> list[type[BaseModel]]:
    """The schemas inside an annotation, however deep (lists, unions, Annotated)."""
    if isinstance(t, type) and issubclass(t, BaseModel):
        return [t]
    return [m for a in get_args(t) for m in _models_in(a)]


def schema_keys(model: type[BaseModel] = Suite, prefix: str = "") -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        path = prefix + name
        keys.add(path)
        if name != "shifts":
            for sub in _models_in(field.annotation):
                keys |= schema_keys(sub, path + ".")
    return keys


def test_every_schema_key_is_walked():
    # containers are walked through their keys; "clean" is both a bool and a table
    walked = set(VARIANTS) | set(NOT_COMPUTING) | {"data", "corruptions", "attacks", "diagnostics", "checks"}
    assert schema_keys() == walked


def _suite(key: str, value: Any = None, changed: bool = False) -> dict:
    section, new = VARIANTS[key]
    doc = copy.deepcopy({**BASE, **SECTIONS[section]})
    if changed:
        head, _, leaf = key.partition(".")
        if not leaf:
            doc[head] = new
        elif head == "attacks":
            doc["attacks"][0][leaf] = new
        else:
            doc.setdefault(head, {})[leaf] = new
    return doc


@pytest.fixture
def captured(monkeypatch):
    """What each evaluator is asked to compute (its arguments), captured on the way in."""
    calls: list[tuple] = []

    def spy(mod, name, describe):
        original = getattr(mod, name)

        def wrapper(*args, **kwargs):
            calls.append((name, describe(*args, **kwargs)))
            return original(*args, **kwargs)
        monkeypatch.setattr(mod, name, wrapper)

    spy(clean_mod, "evaluate_clean", lambda model, ds, bs, *a, extra=None: (
        type(model).__name__, tuple(ds.sample_ids), bs, getattr(extra, "__name__", None)))
    spy(corruptions_mod, "evaluate_corruptions", lambda models, ds, settings, **kw: (
        tuple(ds.sample_ids), tuple(s.key for s in settings), kw["suite_seed"], kw["mode"], kw["engine"],
        kw["params"]))
    spy(attacks_mod, "evaluate_attack", lambda model, ds, cfg, **kw: (
        tuple(ds.sample_ids), repr(cfg), kw["seed"], kw["batch_size"]))
    spy(patch_mod, "evaluate_patch", lambda model, ds, cfg, **kw: (tuple(ds.sample_ids), repr(cfg), kw["seed"]))
    spy(diagnostics_mod, "evaluate_diagnostics", lambda model, ds, *a: tuple(ds.sample_ids))
    return calls


def _run(doc: dict, out, tiny_pair, calls: list) -> tuple[set[str], list]:
    calls.clear()
    s = suite_from({"models": ["tiny-std"], **doc, "registry": [str(tiny_pair)]})
    r = Runner(s, out, device="cpu", quiet=True)
    r.prepare()
    ids = {j.job_id for j in r.jobs()}
    r.run()
    return ids, sorted(map(repr, calls))


@pytest.mark.parametrize("key", sorted(VARIANTS))
@pytest.mark.slow
def test_a_key_changes_job_identity_and_what_is_computed_or_is_refused(key, tmp_path, tiny_pair, captured):
    base_ids, base_calls = _run(_suite(key), tmp_path / "a", tiny_pair, captured)
    assert base_calls, "the base suite computes something"
    try:
        ids, calls = _run(_suite(key, changed=True), tmp_path / "b", tiny_pair, captured)
    except QuestbenchError:
        return  # refused with one line: nothing recorded
    assert ids != base_ids, f"{key}: same job identities"
    assert calls != base_calls, f"{key}: recorded as changed, but the evaluators were asked for the same work"


@pytest.mark.parametrize("key, value", [("name", "other-name"), ("description", "other"), ("num_workers", 1)])
def test_keys_that_compute_nothing_keep_the_job_identity(key, value, tmp_path, tiny_pair):
    doc = {**BASE, **SECTIONS["attacks"], "models": ["tiny-std"], "registry": [str(tiny_pair)]}

    def ids(d):
        r = Runner(suite_from(d), tmp_path / "x", device="cpu", quiet=True)
        r.prepare()
        return {j.job_id for j in r.jobs()}
    assert ids({**doc, key: value}) == ids(doc)


def test_a_key_that_another_key_makes_meaningless_is_refused(tmp_path, tiny_pair, captured):
    doc = _suite("attacks.layers", changed=True)
    doc["attacks"][0]["loss"] = "ce"  # layers pick the attention loss's layers: with ce they would do nothing
    with pytest.raises(QuestbenchError, match="layers"):
        _run(doc, tmp_path / "c", tiny_pair, captured)


@pytest.mark.parametrize("group", ["common", "extra", "all"])
def test_a_group_name_resolves_whether_written_or_defaulted(group):
    """The default ``names = "common"`` is resolved like a written one (a string left unresolved would be
    iterated letter by letter: "unknown corruption 'c'")."""
    from questbench.config.corruptions import ALL_CORRUPTIONS, COMMON_CORRUPTIONS, EXTRA_CORRUPTIONS
    from questbench.config.suite import parse_suite
    expected = {"common": COMMON_CORRUPTIONS, "extra": EXTRA_CORRUPTIONS, "all": ALL_CORRUPTIONS}[group]
    written = parse_suite(f'models = ["m"]\n[corruptions]\nnames = "{group}"\n', "t.toml")
    assert written.corruptions.names == list(expected)
    if group == "common":
        defaulted = parse_suite('models = ["m"]\n[corruptions]\nengine = "torch"\n', "t.toml")
        assert defaulted.corruptions.names == list(COMMON_CORRUPTIONS)
        assert len(defaulted.corruptions.settings()) == 15 * 5
