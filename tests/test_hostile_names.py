"""A name a user gives is data (issue 36): escaped for each context it reaches (the html page's script JSON,
markdown, csv) and never a path (export, train, evaluate); no file is written through a link planted in a
results or output folder."""
from __future__ import annotations

import csv
import io
import json
import re

import pytest

import questbench
from conftest import make_tiny, write_tiny_pair
from questbench._io import safe_name
from questbench.errors import QuestbenchError
from questbench.config.suite import parse_suite
from questbench.report.escaping import csv_text, md_text, script_json
from questbench.report.export import export_robustbench
from questbench.report.html import render_html
from questbench.report.markdown import render_markdown
from questbench.report.tidy import render_csv
from questbench.run.runner import run_suite
from questbench.store.results import load_results

XSS = "</script><script>alert(1)</script>"
FORMULA = "=HYPERLINK(\"x\")|[bold]pipe"  # a formula, a table pipe and rich markup in one name
SUITE = """
seed = 1
batch_size = 8
num_workers = 0
[data]
samples = 8
[corruptions]
engine = "torch"
params = "cifar-c"
[[attacks]]
attack = "fgsm"
eps = ["8/255"]
samples = 8
"""


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    reg = write_tiny_pair(tmp)
    text = reg.read_text().replace('"tiny-std"', json.dumps(XSS)).replace('"tiny-quest"', json.dumps(FORMULA))
    reg.write_text(text)
    suite = parse_suite(f'registry = ["{reg}"]\nmodels = [{json.dumps(XSS)}, {json.dumps(FORMULA)}]\n' + SUITE,
                        "t.toml")
    out = tmp / "out"
    run_suite(suite, out, device="cpu", quiet=True)
    return load_results(out)


def test_script_json_cannot_close_the_script_element():
    text = script_json({"title": XSS, "x": "a\u2028b&"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"title": XSS, "x": "a\u2028b&"}


@pytest.mark.slow
def test_the_html_page_runs_no_script_from_a_name(hostile):
    page = render_html(hostile, per_cell=0)
    assert page.count("<script>") == 1 and page.count("</script>") == 1
    assert XSS not in page


def test_markdown_keeps_names_as_text_and_table_columns_whole(hostile):
    md = render_markdown(hostile)
    assert "<script>" not in md and XSS not in md
    for table in re.findall(r"(?:^\|.*\|\n)+", md, flags=re.M):
        rows = [re.split(r"(?<!\\)\|", line)[1:-1] for line in table.splitlines()]
        assert len({len(r) for r in rows}) == 1, table  # an escaped \| never splits a row


def test_md_text_escapes_what_markdown_would_read():
    assert md_text("a|b<i>`c`&\n") == "a\\|b&lt;i&gt;&#96;c&#96;&amp; "


def test_csv_cells_never_start_a_formula(hostile):
    rows = list(csv.reader(io.StringIO(render_csv(hostile))))
    text_cells = [c for r in rows[1:] for c in r[:6]]
    assert any(c == "'" + FORMULA for c in text_cells)
    assert not any(c[:1] in ("=", "+", "@") for c in text_cells)
    assert csv_text("-1+2") == "'-1+2" and csv_text("plain") == "plain"


def test_safe_name_is_never_a_path_and_names_stay_apart():
    for name in ("../../x", "a/b", ".hidden", "..", "", "w a", XSS):
        s = safe_name(name)
        assert "/" not in s and not s.startswith(".") and s not in ("", "..")
    assert safe_name("w a") != safe_name("w_a") and safe_name("fmnist-vit-quest-s0") == "fmnist-vit-quest-s0"


def test_export_writes_only_inside_out(hostile, tmp_path):
    import copy
    import dataclasses
    out = tmp_path / "deep" / "er" / "export"
    res = dataclasses.replace(hostile, samples=hostile.samples.copy(), provenance=copy.deepcopy(hostile.provenance))
    res.provenance["models"]["../../../../x"] = res.provenance["models"][XSS]
    res.samples.loc[res.samples.model == XSS, "model"] = "../../../../x"
    written, _ = export_robustbench(res, out, dataset="../../x")
    for f in written:
        assert f.resolve().is_relative_to(out.resolve()) and f.parent.parent.parent == out
    assert not list((tmp_path / "deep").glob("x*")) and not (tmp_path / "x").exists()


def test_export_refuses_a_planted_link(hostile, tmp_path):
    out, target = tmp_path / "export", tmp_path / "elsewhere"
    target.mkdir()
    out.mkdir()
    ds = export_robustbench(hostile, tmp_path / "probe")[0][0].relative_to(tmp_path / "probe").parts[0]
    (out / ds).symlink_to(target)
    with pytest.raises(QuestbenchError, match="symbolic link"):
        export_robustbench(hostile, out)
    assert not any(target.iterdir())


@pytest.mark.slow
def test_plots_replace_a_planted_link_instead_of_writing_through_it(hostile, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    board = tmp_path / "board.md"
    render_markdown(hostile, output=board)
    plots = sorted(tmp_path.glob("board_*.png"))
    assert plots
    plots[0].unlink()
    plots[0].symlink_to(victim)
    render_markdown(hostile, output=board)
    assert victim.read_text() == "keep" and not plots[0].is_symlink()


def test_a_linked_jobs_folder_is_refused(tmp_path, tiny_pair):
    out, target = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    target.mkdir()
    (out / "jobs").symlink_to(target)
    suite = parse_suite(f'registry = ["{tiny_pair}"]\nmodels = ["tiny-std"]\n' + SUITE, "t.toml")
    with pytest.raises(QuestbenchError, match="symbolic link"):
        run_suite(suite, out, device="cpu", quiet=True)
    assert not any(target.iterdir())


def test_train_refuses_a_path_as_name(tmp_path):
    from questbench.models.train import train_fmnist
    with pytest.raises(QuestbenchError, match="not a plain name"):
        train_fmnist("quest", 0, tmp_path, epochs=1, name="../../x")
    for bad in ({"epochs": -1}, {"epochs": 0}, {"train_limit": 0}):
        with pytest.raises(QuestbenchError, match="positive integer"):
            train_fmnist("quest", 0, tmp_path, **{"epochs": 1, **bad})
    assert not any(tmp_path.iterdir())


def test_evaluate_keeps_a_hostile_name_inside_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    suite = {"seed": 1, "batch_size": 8, "num_workers": 0, "data": {"samples": 8}}
    res = questbench.evaluate(make_tiny().net, suite=suite, name="../../x", preprocessing={"mean": [0.5], "std": [0.5]})
    assert list(res.samples.model.unique()) == ["../../x"]
    made = [p for p in (tmp_path / "runs").iterdir()]
    assert len(made) == 1 and made[0].name == safe_name("../../x")
    assert not (tmp_path.parent / "x").exists()


def test_the_terminal_view_prints_names_as_text_and_names_missing_jobs(hostile):
    import io

    from rich.console import Console

    from questbench.report.terminal import render_rich
    import dataclasses
    buf = io.StringIO()
    res = dataclasses.replace(hostile, missing_jobs=["x__clean__clean.0123456789abcdef"])
    render_rich(res, console=Console(file=buf, width=200, color_system=None))
    text = buf.getvalue()
    assert "[bold]" in text and "</script>" in text  # shown as written, not eaten as markup
    assert "1 planned job(s) have no results" in text and "x__clean__clean.0123456789abcdef" in text
    # in the same words as the page (the text wraps at the console's width; compare without line breaks)
    from questbench.report.markdown import render_markdown
    from questbench.report.sections import missing_jobs_text
    said = missing_jobs_text(1)
    import html
    assert said in " ".join(text.split()) and said in render_markdown(res)
    assert said in html.unescape(render_html(res, per_cell=0))


def test_a_paired_table_carries_its_models_instead_of_a_title_to_parse(hostile):
    """'Paired: c minus d minus a minus b' cannot be split back into two names; the section says which they are."""
    import dataclasses
    from questbench.report.sections import sections
    from questbench.report.tables import compute_tables

    names = {XSS: "a minus b", FORMULA: "c minus d"}
    s = hostile.samples.copy()
    s["model"], s["pair"] = s.model.map(names), s.pair.map(names)
    (paired,) = [sec for sec in sections(compute_tables(dataclasses.replace(hostile, samples=s))) if sec.pair]
    assert paired.title == "Paired: c minus d minus a minus b" and paired.pair == ("c minus d", "a minus b")
