"""The RobustBench export, read by RobustBench's own code (robustbench 1.1.1 from PyPI, installed without its
dependencies into a folder: `.ci/run` does `pip install --no-deps --target .ci/robustbench robustbench==1.1.1`).

Its package ``__init__`` imports `autoattack` (not on PyPI) and its model zoo imports architectures with
dependencies of their own, so the modules the readers live in are loaded one by one: the real ``enums``,
``utils``, ``leaderboard/template`` and ``eval`` files, with stand-ins only for what they import and the readers
never call (gdown, autoattack, pkg_resources) and for the model zoo's dict, which holds our models as a
submission's entry would. The wheel ships no ``leaderboard.html.j2``, so ``generate_leaderboard`` renders a
stand-in template that prints the fields the real one prints.

Without the folder these tests skip, except where QUESTBENCH_REQUIRE_ROBUSTBENCH is set (CI), where they fail.
"""
import importlib.util
import json
import os
import sys
import types
from pathlib import Path

import pytest

from conftest import write_tiny_pair
from questbench.errors import QuestbenchError
from questbench.config.corruptions import COMMON_CORRUPTIONS

ROOT = Path(__file__).resolve().parents[1]
RB_DIR = Path(os.environ.get("QUESTBENCH_ROBUSTBENCH_DIR", ROOT / ".ci" / "robustbench")) / "robustbench"
STUBBED = ("robustbench", "robustbench.model_zoo", "robustbench.model_zoo.enums", "robustbench.utils",
           "robustbench.leaderboard", "robustbench.leaderboard.template", "robustbench.data", "robustbench.loaders",
           "robustbench.zenodo_download", "robustbench.eval", "gdown", "autoattack", "autoattack.state",
           "pkg_resources", "requests")


@pytest.fixture(scope="module")
def rb():
    if not (RB_DIR / "utils.py").is_file():
        if os.environ.get("QUESTBENCH_REQUIRE_ROBUSTBENCH"):
            pytest.fail(f"RobustBench's code is not at {RB_DIR} (QUESTBENCH_REQUIRE_ROBUSTBENCH is set)")
        pytest.skip(f"RobustBench's code is not at {RB_DIR}: pip install --no-deps --target .ci/robustbench "
                    "robustbench==1.1.1")
    saved = {name: sys.modules.get(name) for name in STUBBED}

    def load(name, path):
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    def package(name, path):
        module = types.ModuleType(name)
        module.__path__ = [str(path)]
        sys.modules[name] = module
        return module

    try:
        package("robustbench", RB_DIR)
        zoo = package("robustbench.model_zoo", RB_DIR / "model_zoo")
        enums = load("robustbench.model_zoo.enums", RB_DIR / "model_zoo" / "enums.py")
        zoo.model_dicts = {d: {t: {} for t in enums.ThreatModel} for d in enums.BenchmarkDataset}
        for name in ("gdown", "pkg_resources", "requests"):  # imported at the top, used only to download
            try:
                importlib.import_module(name)
            except ImportError:
                sys.modules[name] = types.ModuleType(name)
        auto = types.ModuleType("autoattack")
        auto.AutoAttack = object
        state = types.ModuleType("autoattack.state")
        state.EvaluationState = object
        sys.modules["autoattack"], sys.modules["autoattack.state"] = auto, state
        utils = load("robustbench.utils", RB_DIR / "utils.py")
        package("robustbench.leaderboard", RB_DIR / "leaderboard")
        template = load("robustbench.leaderboard.template", RB_DIR / "leaderboard" / "template.py")
        evaluation = load("robustbench.eval", RB_DIR / "eval.py")
        yield types.SimpleNamespace(enums=enums, zoo=zoo, utils=utils, template=template, eval=evaluation)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Tiny standard/QUEST pair: clean, all 15 common corruptions x 5 severities, AutoAttack at two eps."""
    from questbench.run.runner import run_suite
    from questbench.config.suite import parse_suite
    folder = tmp_path_factory.mktemp("rb-run")
    reg = write_tiny_pair(folder)
    text = (f'registry = ["{reg}"]\nmodels = ["tiny-std", "tiny-quest"]\nnum_workers = 0\nbatch_size = 8\n'
            '[data]\nsamples = 8\n[corruptions]\nengine = "torch"\nparams = "cifar-c"\n'
            '[[attacks]]\nattack = "autoattack"\neps = ["2/255", "8/255"]\nsamples = 3\n')
    run_suite(parse_suite(text, "t.toml"), folder / "res", device="cpu", quiet=True)
    import questbench
    return questbench.load_results(folder / "res")


@pytest.fixture
def exported(run, tmp_path, monkeypatch):
    """The export named cifar10 and imagenet under tmp_path/model_info, the folder RobustBench reads from its
    working directory."""
    from questbench.report.export import export_robustbench
    notes = {}
    for ds in ("cifar10", "imagenet"):
        _, notes[ds] = export_robustbench(run, tmp_path / "model_info", dataset=ds)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "model_info", notes


def _register(rb, ds, threat):
    d, t = rb.enums.BenchmarkDataset(ds), rb.enums.ThreatModel(threat)
    for name in ("tiny-std", "tiny-quest"):  # as a submission adds its model to the zoo
        rb.zoo.model_dicts[d][t][name] = {}
    return d, t


def test_robustbench_leaderboard_readers_take_the_export(rb, exported, capsys, monkeypatch):
    from jinja2 import DictLoader
    folder, notes = exported
    # RobustBench's eps for both (CIFAR-10 Linf: 8/255) or, where the run lacks it (ImageNet: 4/255), the largest
    for ds in ("cifar10", "imagenet"):
        assert any("Linf: exported AutoAttack at 8/255; not at 2/255" in n for n in notes[ds])
    linf = {m: json.loads((folder / "cifar10" / "Linf" / f"{m}.json").read_text()) for m in ("tiny-std", "tiny-quest")}
    monkeypatch.setattr(rb.template, "PackageLoader", lambda *a: DictLoader({"leaderboard.html.j2": (
        "{% for model in models %}{{ loop.index }}|<a href=\"{{ model.link }}\">{{ model.name }}</a>|"
        "{{ model.clean_acc }}%|{{ model[acc_field] }}%|{{ model.architecture }}|{{ model.venue }}\n{% endfor %}")}))
    html = rb.template.generate_leaderboard("cifar10", "Linf", models_folder=str(folder))
    rows = [line.split("|") for line in html.strip().splitlines()]
    order = sorted(linf, key=lambda m: -float(linf[m]["autoattack_acc"]))
    assert [r[1].split(">")[1].split("<")[0] for r in rows] == order
    assert [r[3] for r in rows] == [linf[m]["autoattack_acc"] + "%" for m in order]
    assert all(r[5] == "N/A" for r in rows)
    html = rb.template.generate_leaderboard("cifar10", "corruptions", models_folder=str(folder))
    assert len(html.strip().splitlines()) == 2
    capsys.readouterr()
    _register(rb, "cifar10", "Linf")
    rb.utils.list_available_models("cifar10", "Linf")
    table = capsys.readouterr().out
    for m in order:
        assert f"**{m}**" in table and f"{float(linf[m]['autoattack_acc']):.2f}%" in table
    latex = rb.utils.get_leaderboard_latex("cifar10", "Linf")
    assert latex.count("\\\\") == 2 and all(f"& {linf[m]['autoattack_acc']} &" in latex for m in order)
    entries, _ = rb.utils.get_leaderboard_bibtex("cifar10", "Linf")
    assert entries == set()  # venue N/A: no empty bibtex entry
    rb.utils.update_json(rb.enums.BenchmarkDataset("cifar10"), rb.enums.ThreatModel.Linf, "tiny-std", 0.5, 0.25,
                         8 / 255)
    updated = json.loads((folder / "cifar10" / "Linf" / "tiny-std.json").read_text())
    assert updated["autoattack_acc"] == "25.0" and updated["name"] == "tiny-std" and updated["venue"] == "N/A"


def test_robustbench_mce_reads_the_imagenet_csv_and_agrees(rb, exported, monkeypatch):
    """RobustBench's corruptions_evaluation on a probe model whose accuracy per corruption and severity is the
    exported one (n = 10,000, each accuracy has 4 decimals): it reads our csv, finds AlexNet's row, and its mean
    accuracy and mCE equal the exported corruptions_acc and corruptions_mce."""
    import pandas as pd
    import torch
    folder, _ = exported
    table = pd.read_csv(folder / "imagenet" / "corruptions" / "unaggregated_results.csv", header=[0, 1], index_col=0)
    assert list(table.index) == ["AlexNet", "tiny-quest", "tiny-std"]
    n = 10000
    for model in ("tiny-std", "tiny-quest"):
        info = json.loads((folder / "imagenet" / "corruptions" / f"{model}.json").read_text())
        acc = {(c, int(s)): float(v) for (c, s), v in table.loc[model].items()}

        def loader(n_examples, severity, data_dir, shuffle=False, corruptions=(), prepr=None, acc=acc):
            hits = round(acc[corruptions[0], severity] * n_examples)
            y = torch.ones(n_examples, dtype=torch.long)
            y[:hits] = 0
            return torch.zeros(n_examples, 1), y

        probe = lambda x: torch.tensor([[1.0, 0.0]]).expand(len(x), 2)  # noqa: E731  always class 0
        d, t = rb.enums.BenchmarkDataset.imagenet, rb.enums.ThreatModel.corruptions
        monkeypatch.setitem(rb.eval.CORRUPTION_DATASET_LOADERS[d], t, loader)
        assert set(rb.eval.CORRUPTIONS_DICT[d][t]) == set(COMMON_CORRUPTIONS)
        mean_acc, rb_mce = rb.eval.corruptions_evaluation(n, "", d, t, torch.device("cpu"), probe, n, False,
                                                          "", "probe")
        assert f"{100 * mean_acc:.2f}" == info["corruptions_acc"]
        assert abs(100 * rb_mce - float(info["corruptions_mce"])) < 0.006


@pytest.mark.slow
def test_export_notes_and_refusals(run, tmp_path):
    from questbench.report.export import robustbench_files
    export = robustbench_files(run)  # the run's own dataset, fashion-mnist
    assert any("'fashion-mnist' is not one of RobustBench's datasets" in n for n in export.notes)
    assert "fashion-mnist/corruptions/unaggregated_results.csv" in export.files
    corr = json.loads(export.files["fashion-mnist/corruptions/tiny-std.json"])
    # the fields of RobustBench's model_info/cifar10/corruptions/Hendrycks2020AugMixWRN.json, plus its footnote
    assert set(corr) == {"link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
                         "architecture", "eps", "clean_acc", "reported", "corruptions_acc", "footnote"}
    assert corr["eps"] is None and "15 common corruptions x 5 severities on 8 images" in corr["footnote"]
    picked = robustbench_files(run, "cifar10", eps=2 / 255)
    assert json.loads(picked.files["cifar10/Linf/tiny-std.json"])["eps"] == "2/255"
    with pytest.raises(QuestbenchError, match="ran at 2/255, 8/255 only"):
        robustbench_files(run, "cifar10", eps=4 / 255)


def test_unreliable_is_set_by_the_attack_checks_not_by_sample_size(run, monkeypatch):
    """RobustBench's ``unreliable`` means the AutoAttack number may overstate robustness: set from questbench's
    attack checks (a flagged model), not from n (3 images here, and both unflagged)."""
    import questbench.report.export as export
    plain = export.robustbench_files(run, "cifar10")
    assert not any(json.loads(plain.files[f"cifar10/Linf/{m}.json"])["unreliable"] for m in ("tiny-std", "tiny-quest"))
    monkeypatch.setattr(export, "checks_table", lambda samples: (None, [{"model": "tiny-std", "flag": True},
                                                                        {"model": "tiny-quest", "flag": False}]))
    flagged = export.robustbench_files(run, "cifar10")
    assert json.loads(flagged.files["cifar10/Linf/tiny-std.json"])["unreliable"] is True
    assert json.loads(flagged.files["cifar10/Linf/tiny-quest.json"])["unreliable"] is False
