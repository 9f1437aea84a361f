"""Nothing silently wrong: hand-edited or forged results are refused with one line naming the file, a missing job
is named and never replaced by another setting's value, bad models and API inputs are refused before any work."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

import questbench
from conftest import make_tiny, write_tiny_pair
from questbench.errors import QuestbenchError
from questbench.kinds import Part
from questbench.run.merge import read_part, write_part
from questbench.report.markdown import render_markdown
from questbench.store.results import load_results
from questbench.run.runner import run_suite
from questbench.config.suite import parse_suite

SUITE = """
models = ["tiny-std", "tiny-quest"]
seed = 1
batch_size = 8
num_workers = 0
[data]
samples = 12
[[attacks]]
attack = "fgsm"
eps = [0, "1/255", "8/255"]
samples = 8
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One run of SUITE for the whole module: (its results folder, its registry). Tests take copies."""
    folder = tmp_path_factory.mktemp("finished")
    registry = write_tiny_pair(folder)
    run_suite(parse_suite(f'registry = ["{registry}"]\n' + SUITE, "t.toml"), folder / "out", device="cpu",
              quiet=True)
    return folder / "out", registry


@pytest.fixture
def done(tmp_path, finished):
    """A fresh copy of the finished run's folder, for a test to damage."""
    out = tmp_path / "out"
    shutil.copytree(finished[0], out, symlinks=True)
    return out


def _job(out, evaluation, model="tiny-std", setting=None):
    for f in sorted((out / "jobs").glob("*.json")):
        doc = json.loads(f.read_text())
        if doc["job"]["evaluation"] == evaluation and doc["job"]["model"] == model and \
                (setting is None or setting in doc["job"]["setting"]):
            return f, doc
    raise AssertionError("no such job")


def _edit(f, doc):
    f.write_text(json.dumps(doc))


@pytest.mark.parametrize("edit, message", [
    ("flip correct", "records correct"),
    ("correct without the label", "records correct"),
    ("duplicate a record", "twice"),
    ("consistent new prediction", "changed after it was written"),
    ("digest removed", "no digest"),
])
def test_a_hand_edited_job_file_is_refused(done, edit, message):
    f, doc = _job(done, "clean")
    r = doc["records"]
    if edit == "flip correct":
        r[0]["correct"] = not r[0]["correct"]
    elif edit == "correct without the label":
        wrong = next(x for x in r if not x["correct"])
        wrong["correct"] = True
    elif edit == "duplicate a record":
        r[1] = dict(r[0])
    elif edit == "consistent new prediction":  # pred and correct changed together: only the digest can tell
        x = next(x for x in r if not x["correct"])
        x["pred"], x["correct"] = x["label"], True
    else:  # records untouched: a file without a digest is never trusted
        del doc["job"]["sha256"]
    _edit(f, doc)
    with pytest.raises(QuestbenchError, match=message) as exc:
        load_results(done)
    assert f.name in str(exc.value)


@pytest.mark.parametrize("edit", ["eps", "flags", "model", "wall_s"])
def test_an_edited_job_header_is_refused(done, edit):
    """The digest covers the header too: an eps edited to 0.5 would add a column, a forged flag would be shown,
    a renamed model would move its numbers (issue 36)."""
    f, doc = _job(done, "attack", setting="eps=0.0313725")
    doc["job"] |= {"eps": {"eps": 0.5}, "flags": {"flags": ["forged"]}, "model": {"model": "tiny-quest"},
                   "wall_s": {"wall_s": 1.0}}[edit]
    _edit(f, doc)
    with pytest.raises(QuestbenchError, match="changed after it was written"):
        load_results(done)


def test_job_files_swapped_between_two_models_are_refused(done):
    a, doc_a = _job(done, "clean", model="tiny-std")
    b, doc_b = _job(done, "clean", model="tiny-quest")
    _edit(a, doc_b)
    _edit(b, doc_a)
    with pytest.raises(QuestbenchError, match="foreign to this folder"):
        load_results(done)


def test_an_attack_record_must_follow_from_its_predictions(done):
    f, doc = _job(done, "attack", setting="eps=0.0313725")
    robust = next((x for x in doc["records"] if not x["correct"] and x["clean_correct"]), doc["records"][0])
    robust["correct"] = not robust["correct"]
    _edit(f, doc)
    with pytest.raises(QuestbenchError, match="records correct"):
        load_results(done)


def test_a_forged_part_with_unplanned_samples_is_refused(done):
    f, doc = _job(done, "clean")
    job_id = f.stem
    f.unlink()  # as if the run had stopped before merging
    records = [dict(r, sample_id=f"test/9999{i}") for i, r in enumerate(doc["records"][:8])] + doc["records"][8:]
    write_part(done, job_id, Part(0, 8, records[:8]))
    write_part(done, job_id, Part(8, 12, records[8:]))
    from questbench.run.merge import merge_job
    merge_job(done, job_id, [(0, 8), (8, 12)], {}, lambda *a: {k: v for k, v in doc["job"].items()
                                                               if k != "sha256"})
    with pytest.raises(QuestbenchError, match="test/99990' was never planned"):
        load_results(done)


def test_a_damaged_part_is_one_line(tmp_path):
    write_part(tmp_path, "job.abc", Part(0, 2, [{"a": 1}, {"a": 2}]))
    assert read_part(tmp_path, "job.abc", 0, 2).records == [{"a": 1}, {"a": 2}]
    f = tmp_path / "shards" / "job.abc.0-2.json"
    f.write_text(f.read_text().replace('"a":2', '"a":3'))  # an edit that keeps the file valid JSON
    with pytest.raises(QuestbenchError, match="changed after they were written"):
        read_part(tmp_path, "job.abc", 0, 2)
    write_part(tmp_path, "job.abc", Part(0, 2, [{"a": 1}, {"a": 2}]))
    f.write_text(f.read_text()[:20])
    with pytest.raises(QuestbenchError, match="damaged shard part"):
        read_part(tmp_path, "job.abc", 0, 2)


def test_a_missing_job_is_named_and_never_replaced_by_a_smaller_eps(done):
    before = render_markdown(load_results(done))
    assert "| fmnist" not in before and "FGSM 8/255" in before
    f, _ = _job(done, "attack", model="tiny-quest", setting="eps=0.0313725")
    f.unlink()
    res = load_results(done)
    assert res.missing_jobs == [f.stem]
    md = render_markdown(res)
    head = md.split("## Headline")[1].split("## ")[0]
    row = next(line for line in head.splitlines() if line.startswith("| tiny-quest"))
    assert row.rstrip(" |").endswith("missing")  # not its 1/255 value
    assert "## Missing jobs" in md and f.stem in md


def test_a_model_with_nan_logits_is_refused_before_anything_is_written(tmp_path):
    model = make_tiny("standard")
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    out = tmp_path / "nan"
    with pytest.raises(QuestbenchError, match="non-finite logits"):
        questbench.evaluate(model, {"data": {"samples": 4}, "batch_size": 4, "num_workers": 0}, out=out,
                            name="nanny", device="cpu")
    assert not (out / "jobs").exists() and not (out / "provenance.json").exists()


class _NaNAfter(torch.nn.Module):
    """Finite logits for the first ``calls`` forward passes (the pre-run check sees one), NaN for one image after."""

    def __init__(self, calls: int):
        super().__init__()
        self.net, self.calls = make_tiny("standard"), calls

    def forward(self, x):
        z = self.net(x)
        self.calls -= 1
        if self.calls < 0:
            z = z.clone()
            z[-1, 0] = float("nan")
        return z


@pytest.mark.parametrize("job", ["clean", "corruption", "attack"])
def test_nan_logits_during_a_job_fail_it_naming_the_model(tmp_path, job):
    suite = {"data": {"samples": 4}, "batch_size": 4, "num_workers": 0, "seed": 3}
    if job == "corruption":
        suite["corruptions"] = {"names": ["gaussian_noise"], "severities": [1], "samples": 4}
    if job == "attack":
        suite["attacks"] = [{"attack": "fgsm", "eps": ["2/255"], "samples": 4}]
    out = tmp_path / "nan"
    with pytest.raises(QuestbenchError, match=r"model nanny .*non-finite logits \(NaN or inf\) for 1 of 4 images"):
        # forward passes in order: the pre-run check, clean, then the corruption's or the attack's (clean, gradient,
        # adversarial); NaN starts at the job's own (the attack: at its adversarial predictions)
        questbench.evaluate(_NaNAfter({"clean": 1, "corruption": 2, "attack": 4}[job]), suite, out=out,
                            name="nanny", device="cpu")
    written = [json.loads(f.read_text())["job"]["evaluation"] for f in (out / "jobs").glob("*.json")]
    assert written == ([] if job == "clean" else ["clean"])


def test_attack_api_refuses_nan_logits():
    from questbench.evaluators.common import NonFiniteLogits
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    with pytest.raises(NonFiniteLogits, match="for 1 of 4 images"):
        questbench.attack(_NaNAfter(1), x, y, "pgd", eps=2 / 255, steps=2)


def test_a_model_with_the_wrong_logits_shape_is_refused_up_front(tmp_path):
    class Flat(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :3]  # three "classes" for ten labels

    out = tmp_path / "flat"
    with pytest.raises(QuestbenchError, match="3 outputs"):
        questbench.evaluate(Flat(), {"data": {"samples": 4}, "num_workers": 0}, out=out, name="flat", device="cpu")
    assert not (out / "jobs").exists()


@pytest.mark.parametrize("change, message", [
    (dict(x=lambda x: x * 3), "in \\[0, 1\\]"),
    (dict(eps="8/255"), "eps is a number"),
    (dict(y=lambda y: y.float()), "integer labels"),
    (dict(y=lambda y: y + 50), "labels must be in"),
])
def test_attack_api_refuses_what_it_cannot_honour(change, message):
    model = make_tiny("standard")
    x, y = torch.rand(3, 1, 28, 28), torch.tensor([1, 2, 3])
    x = change.get("x", lambda v: v)(x)
    y = change.get("y", lambda v: v)(y)
    with pytest.raises(QuestbenchError, match=message):
        questbench.attack(model, x, y, "fgsm", eps=change.get("eps", 8 / 255))


@pytest.mark.parametrize("attack, message", [
    ('patches = [17]', "do not fit"),  # the tiny ViT has a 4 x 4 token grid
    ('patches = [1]\npatch_size = 5', "do not fit"),
    ('patches = [1]\nloss = "attention"\nlayers = [99]', "blocks the model does not have"),
])
def test_patch_settings_the_model_cannot_take_are_refused_before_any_job(tmp_path, tiny_pair, attack, message):
    text = (f'registry = ["{tiny_pair}"]\nmodels = ["tiny-std"]\nnum_workers = 0\n[data]\nsamples = 4\n'
            f'[[attacks]]\nattack = "patch"\nsteps = 2\n{attack}\n')
    out = tmp_path / "out"
    with pytest.raises(QuestbenchError, match=message):
        run_suite(parse_suite(text, "t.toml"), out, device="cpu", quiet=True)
    assert not (out / "jobs").exists() and not (out / "provenance.json").exists()


def test_compare_names_missing_jobs(done, capsys):
    from questbench.cli import main
    f, _ = _job(done, "attack", model="tiny-quest", setting="eps=0.0313725")
    f.unlink()
    with pytest.raises(SystemExit) as exc:
        main(["compare", str(done), "tiny-std", "tiny-quest"])
    assert exc.value.code in (0, None)
    out = capsys.readouterr().out
    assert "1 planned job(s) of these models are missing" in out and f.stem[:20] in out.replace("\n", "")


@pytest.fixture
def saved(tmp_path):
    from questbench.models.build import save_checkpoint
    save_checkpoint(make_tiny("standard"), tmp_path / "good.safetensors")
    return tmp_path


def _variant(folder, name, change_spec=None, weights=None):
    import hashlib
    import shutil
    card = json.loads((folder / "good.json").read_text())
    suffix = ".pt" if weights is not None else ".safetensors"
    target = folder / f"{name}{suffix}"
    if weights is not None:
        torch.save(weights, target)
    else:
        shutil.copy(folder / "good.safetensors", target)
    card["spec"] = {**card["spec"], **(change_spec or {})}
    card["sha256"] = hashlib.sha256(target.read_bytes()).hexdigest()
    card["weights"] = target.name
    (folder / f"{name}.json").write_text(json.dumps(card))
    return target


@pytest.mark.parametrize("name, spec, weights, message", [
    ("arch-kwargs", {"arch_kwargs": {"patch_size": 7, "embed_dim": 32, "depth": 2, "num_heads": 2, "bogus": 3}},
     None, "arch_kwargs"),
    ("num-classes", {"num_classes": "ten"}, None, r"^model spec: num_classes: Input should be a valid integer"),
    ("num-classes-0", {"num_classes": 0}, None, r"^model spec: num_classes: Input should be greater than 0"),
    ("input-size", {"input_size": "abc"}, None, r"^model spec: input_size: Input should be a valid tuple"),
    ("input-size-2", {"input_size": [3, 28]}, None, r"^model spec: input_size: Field required"),
    ("mean-nan", {"mean": [float("nan")]}, None, r"^model spec: mean: Input should be a finite number"),
    ("std-zero", {"std": [0.0]}, None, r"^model spec: std: Input should be greater than 0"),
    ("mean-channels", {"mean": [0.5, 0.5]}, None, r"^model spec: mean has 2 values for 1 channels"),
    ("unknown", {"patch": 7}, None, r"^model spec: patch: unknown field"),
    ("non-tensors", None, {"a": [1, 2], "b": "x"}, "entry 'a' is a list, not a tensor"),
])
def test_bad_weights_and_cards_are_one_line(saved, name, spec, weights, message):
    path = _variant(saved, name, spec, weights)
    with pytest.raises(QuestbenchError, match=message):
        questbench.load_model(str(path))


def test_python_api_inputs_are_checked_like_cli_inputs(tmp_path):
    with pytest.raises(QuestbenchError, match="severity is an integer"):
        questbench.corrupt(torch.rand(1, 3, 32, 32), "fog", severity=3.0)
    with torch.device("meta"):
        meta = torch.nn.Linear(784, 10)
    with pytest.raises(QuestbenchError, match="cannot be moved|fails on the suite's images"):
        questbench.evaluate(torch.nn.Sequential(torch.nn.Flatten(), meta), {"data": {"samples": 2}, "num_workers": 0},
                            out=tmp_path / "meta", name="meta", device="cpu")


def test_a_class_count_mismatch_names_the_tensor(saved):
    path = _variant(saved, "classes", {"num_classes": 7})
    expected = r"head\.(weight|bias) is \(10(, 32)?,?\) in the file, \(7(, 32)?,?\) in the model \(num_classes"
    with pytest.raises(QuestbenchError, match=expected):
        questbench.load_model(str(path))


def test_a_raw_pickle_bin_is_one_line_without_torch_warnings(saved):
    import pickle
    import warnings
    path = _variant(saved, "raw", weights={})
    raw = path.with_suffix(".bin")
    raw.write_bytes(pickle.dumps({"head.weight": [1.0, 2.0]}, protocol=4))  # not a torch file: protocol 4
    card = json.loads(path.with_suffix(".json").read_text())
    import hashlib
    card.update(weights=raw.name, sha256=hashlib.sha256(raw.read_bytes()).hexdigest())
    raw.with_suffix(".json").write_text(json.dumps(card))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(QuestbenchError, match=r"raw\.bin: Weights only load failed \(pickles load with"):
            questbench.load_model(str(raw))
    assert [str(w.message) for w in caught] == []


CORRUPTION_SUITE = """
models = ["tiny-std", "tiny-quest"]
seed = 1
batch_size = 8
num_workers = 0
[data]
samples = 8
[corruptions]
names = ["gaussian_noise", "contrast"]
severities = [1, 5]
engine = "torch"
params = "cifar-c"
"""


def test_an_aggregate_over_settings_needs_every_setting(tmp_path, tiny_pair):
    """Deleting one corruption job must not turn the model's headline into a mean over the other settings, and
    deleting its clean job must not drop its row (issue 36)."""
    out = tmp_path / "out"
    run_suite(parse_suite(f'registry = ["{tiny_pair}"]\n' + CORRUPTION_SUITE, "t.toml"), out, device="cpu",
              quiet=True)
    f, _ = _job(out, "corruption", model="tiny-quest", setting="contrast/5")
    f.unlink()
    g, _ = _job(out, "clean", model="tiny-quest")
    g.unlink()
    md = render_markdown(load_results(out))
    head = md.split("## Headline")[1].split("## ")[0]
    row = next(line for line in head.splitlines() if line.startswith("| tiny-quest"))
    cells = [c.strip() for c in row.strip(" |").split("|")]
    assert cells[2] == "missing" and cells[3] == "missing", row  # clean, corruption error
    other = next(line for line in head.splitlines() if line.startswith("| tiny-std"))
    assert "missing" not in other


@pytest.mark.parametrize("damage", ["edit seed", "edit checkpoint sha256", "truncate", "delete"])
def test_a_damaged_provenance_is_refused_by_reports_and_rebuilt_by_a_run(done, finished, damage):
    """provenance.json carries a digest of itself: an edited seed or checksum is refused, never rendered; a run
    of the same suite rebuilds a damaged or deleted one from the suite and the job files, computing nothing
    again (issue 36)."""
    prov = done / "provenance.json"
    doc = json.loads(prov.read_text())
    if damage == "edit seed":
        doc["seed"] = 7
        prov.write_text(json.dumps(doc))
    elif damage == "edit checkpoint sha256":
        doc["models"]["tiny-std"]["sha256"] = "0" * 64
        prov.write_text(json.dumps(doc))
    elif damage == "truncate":
        prov.write_text(prov.read_text()[:100])
    else:
        prov.unlink()
    with pytest.raises(QuestbenchError, match="rebuild it"):
        load_results(done)
    summary = run_suite(parse_suite(f'registry = ["{finished[1]}"]\n' + SUITE, "t.toml"), done, device="cpu",
                        quiet=True)
    assert summary.jobs_run == 0 and summary.jobs_skipped == summary.jobs_total
    assert load_results(done).provenance["seed"] == 1


def test_one_eps_written_two_ways_is_refused():
    text = 'models = ["m"]\n[[attacks]]\nattack = "pgd"\neps = ["8/255", 0.03137255]\n'
    with pytest.raises(QuestbenchError, match="listed twice"):
        parse_suite(text, "s.toml")


@pytest.mark.parametrize("x, message", [
    (torch.full((2, 3, 8, 8), float("nan")), "finite images in \\[0, 1\\]"),
    (torch.rand(2, 3, 8, 8) * 255, "divide by 255"),
    ((torch.rand(2, 3, 8, 8) * 255).to(torch.uint8), "not torch.uint8"),
    (torch.rand(0, 3, 8, 8), "non-empty batch"),
    (torch.rand(2, 5, 8, 8), "1- or 3-channel"),
])
def test_corrupt_checks_its_input_before_any_work(x, message):
    with pytest.raises(QuestbenchError, match=message):
        questbench.corrupt(x, "gaussian_noise", 1)


def test_attack_checks_its_input_before_any_work():
    model = make_tiny()
    x, y = torch.rand(2, 1, 28, 28), torch.tensor([1, 2])
    for bad_x, message in ((x.double(), "float32"), (x[:0], "empty batch")):
        with pytest.raises(QuestbenchError, match=message):
            questbench.attack(model, bad_x, y[: len(bad_x)] if len(bad_x) else y[:0], "fgsm", eps=8 / 255)

    class TupleOut(torch.nn.Module):
        def forward(self, x):
            return model(x), 0

    class IntLogits(torch.nn.Module):
        def forward(self, x):
            return model(x).round().long()

    for net, message in ((TupleOut(), "not tuple"), (IntLogits(), "torch.int64")):
        with pytest.raises(QuestbenchError, match=message):
            questbench.attack(net, x, y, "fgsm", eps=8 / 255)


def test_a_model_that_edits_its_input_does_not_change_the_next_models_error():
    """One corrupted batch serves every model; each gets its own copy (issue 36)."""
    ds = questbench.load_dataset("fashion-mnist").subset(range(16))
    plain = make_tiny(seed=2)

    class Vandal(torch.nn.Module):
        def forward(self, x):
            x.zero_()
            return plain(x)

    alone = questbench.corruption_sweep({"plain": plain}, ds, ["contrast"], [3], num_workers=0, quiet=True)
    both = questbench.corruption_sweep({"vandal": Vandal(), "plain": plain}, ds, ["contrast"], [3], num_workers=0,
                                       quiet=True)
    assert both["plain"] == alone["plain"]
    with pytest.raises(QuestbenchError, match="empty dataset"):
        questbench.corruption_sweep({"plain": plain}, ds.subset([]), ["contrast"], [3], num_workers=0)


def test_a_provenance_of_the_wrong_shape_is_refused_even_with_a_fresh_digest(done):
    """The digest says the file is as written; the schema (store/schema.py) says it is what a report may read."""
    from questbench.store.results import PROVENANCE, _provenance_digest

    prov = json.loads((done / PROVENANCE).read_text())
    del prov["models"]["tiny-std"]["sha256"]
    prov["sha256"] = _provenance_digest(prov)
    (done / PROVENANCE).write_text(json.dumps(prov))
    with pytest.raises(QuestbenchError, match=r"does not match the provenance schema \(models.tiny-std.sha256: "):
        load_results(done)


def test_only_the_store_reads_the_provenance_document_by_key():
    """Reports read typed fields (Results.run); a `.get` walk of the JSON outside the store is a test failure."""
    import re
    from pathlib import Path

    root = Path(questbench.__file__).parent
    walks = [f"{f.relative_to(root)}: {m.group(0)}" for f in root.rglob("*.py") if "store" not in f.parts
             for m in re.finditer(r"provenance(\.get\(|\[\")", f.read_text())]
    assert walks == []
