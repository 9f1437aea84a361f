"""What a person sees: the README's Python runs as written, a quiet run still says where things went, the csv
is tidy, the command line starts without torch, files get normal permissions."""
import csv
import io
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from questbench.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.mark.slow
def test_readme_python_blocks_run_as_written(tmp_path, monkeypatch, capsys):
    """The README's set-up runs `questbench run` first (here capped at 4 samples), then the Python blocks of the
    README and of every page under docs/."""
    monkeypatch.chdir(tmp_path)
    code, _, err = _cli(["run", "--limit", "4", "--quiet", "--device", "cpu"], capsys)
    assert code == 0, err
    # --quiet still names the results folder and the leaderboard it wrote
    assert "results in runs/default" in err and "leaderboard runs/default/leaderboard.md" in err
    assert (tmp_path / "runs" / "default" / "leaderboard.md").read_text().startswith("# questbench leaderboard")
    pages = [README] + sorted((ROOT / "docs").glob("*.md"))  # the README and every docs page, as written
    blocks = [(page, block) for page in pages
              for block in re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)]
    assert len(blocks) >= 2
    for k, (page, block) in enumerate(blocks):
        exec(compile(block, f"{page.name} python block {k + 1}", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    assert "9 9" in out and "100.0" in out and "# questbench leaderboard: default" in out  # as the comments promise


def test_csv_is_tidy_and_typed(tmp_path, tiny_pair):
    from questbench.report.tidy import CSV_COLUMNS, render_csv
    from questbench.store.results import load_results
    from questbench.run.runner import run_suite
    from questbench.config.suite import parse_suite
    text = (f'registry = ["{tiny_pair}"]\nmodels = ["tiny-std", "tiny-quest"]\nnum_workers = 0\nbatch_size = 8\n'
            '[data]\nsamples = 12\n[corruptions]\nnames = ["fog"]\nseverities = [1, 3]\n[[attacks]]\n'
            'attack = "fgsm"\neps = [0, "2/255", "4/255"]\n[diagnostics]\nsamples = 4\n')
    run_suite(parse_suite(text, "t.toml"), tmp_path / "out", device="cpu", quiet=True)
    rows = list(csv.DictReader(io.StringIO(render_csv(load_results(tmp_path / "out")))))
    assert list(rows[0]) == CSV_COLUMNS
    assert all(re.fullmatch(r"\d+", r["n"]) for r in rows)  # n on every row, an integer
    for r in rows:  # each row carries the metric of its table, in the column whose name gives the unit
        metric = {"clean": "accuracy_pct", "corruption": "error_pct", "corruption_summary": "error_pct",
                  "corruption_severity": "accuracy_pct", "attack": "accuracy_pct", "pair": "delta_pp",
                  "attention": "entropy_nats"}[r["table"]]
        assert r[metric] != "" and float(r[metric]) == float(r[metric])
    pairs = [r for r in rows if r["table"] == "pair"]
    assert pairs and all(r["delta_ci_low_pp"] and r["delta_ci_high_pp"] and r["p_value"] and r["p_holm"]
                         for r in pairs)
    assert {r["resolves_5pp"] for r in rows} == {"false"}  # 12 samples resolve nothing


@pytest.mark.slow
def test_command_line_starts_without_torch():
    code = "import sys, questbench, questbench.cli, questbench.models.registry, questbench.config.suite; " \
           "print(sorted(m for m in ('torch', 'timm', 'pandas', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    # and timm still finds questbench's names once both are imported, in either order
    for first, second in (("questbench", "timm"), ("timm", "questbench")):
        code = f"import {first}, {second}; print('vit_small_patch16_224_quest' in timm.list_models('*_quest'))"
        assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True).stdout.strip() == "True"


@pytest.mark.slow
def test_reports_read_results_without_torch(tmp_path, tiny_pair):
    """The store, the statistics and every report format load and render a results folder with torch and timm
    never imported (they sit below the models in the layers)."""
    from questbench.run.runner import run_suite
    from questbench.config.suite import parse_suite
    text = (f'registry = ["{tiny_pair}"]\nmodels = ["tiny-std", "tiny-quest"]\nnum_workers = 0\nbatch_size = 8\n'
            '[data]\nsamples = 8\n[corruptions]\nengine = "torch"\nparams = "cifar-c"\n[[attacks]]\nattack = "fgsm"\n'
            'eps = [0, "2/255"]\n')
    run_suite(parse_suite(text, "t.toml"), tmp_path / "out", device="cpu", quiet=True)
    code = ("import sys\nfrom questbench.store.results import load_results\n"
            "from questbench.report.markdown import render_markdown\nfrom questbench.report.tidy import render_csv\n"
            "from questbench.report.compare import compare_pairs, compare_seeds\n"
            "from questbench.report.export import export_robustbench\n"
            f"r = load_results({str(tmp_path / 'out')!r}); render_markdown(r); render_csv(r); compare_pairs(r)\n"
            f"export_robustbench(r, {str(tmp_path / 'rb')!r}, 'cifar10')\n"
            "print(sorted(m for m in ('torch', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    # the commands too: leaderboard (md with plots, csv), compare and export start and finish without torch
    for args in (["leaderboard", "out", "--output", "lb.md"], ["leaderboard", "out", "--format", "csv"],
                 ["compare", "out", "tiny-std", "tiny-quest"], ["export", "out", "--out", "rb2", "--dataset", "cifar10"]):
        code = ("import sys\nfrom questbench.cli import main\n"
                f"try:\n    main({args!r})\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
                "print(sorted(m for m in ('torch', 'timm') if m in sys.modules), file=sys.stderr)")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 0 and r.stderr.strip().splitlines()[-1] == "[]", (args, r.stderr[-500:])


def test_train_without_the_training_split_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    import questbench.data.fashion_mnist as fm
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "no-debian-package")
    code, _, err = _cli(["train", "--out", tmp_path / "zoo", "--epochs", "1", "--quiet"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "apt-get install dataset-fashion-mnist" in err and "--download" in err and "--data-root" in err


def test_results_get_the_users_normal_permissions(tmp_path):
    from questbench._io import atomic_write_bytes
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.json", b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644


def test_readme_layout_matches_the_tree():
    """The Layout page (docs/layout.md) is what tools/layout.py makes from the tree today (its modules, their
    docstrings, the layer table tests/test_layers.py enforces)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("layout", ROOT / "tools" / "layout.py")
    layout = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(layout)
    page = layout.PAGE.read_text()
    current = page[page.index(layout.START):page.index(layout.END)]
    assert current == layout.section(), "docs/layout.md is stale: run python tools/layout.py --write"


def test_an_explicit_out_is_used_as_given(tmp_path, monkeypatch, capsys, tiny_pair):
    """`--out runs/default` for another suite writes there, not to runs/<suite> (issue 37)."""
    from conftest import write_suite
    monkeypatch.chdir(tmp_path)
    suite = write_suite(tmp_path, tiny_pair, 'models = ["tiny-std"]\nseed = 1\nbatch_size = 8\nnum_workers = 0\n'
                                             '[data]\nsamples = 8\n')
    code, _, err = _cli(["run", suite, "--out", "runs/default", "--quiet", "--device", "cpu", "--ranks", "1"], capsys)
    assert code == 0, err
    assert (tmp_path / "runs" / "default" / "provenance.json").is_file()
    assert not (tmp_path / "runs" / "suite").exists()
