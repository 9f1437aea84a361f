"""The html leaderboard page: self-contained, the markdown's numbers, and - in a real browser (Debian's chromium
and chromium-driver through selenium) - sortable columns, discordant-image panels whose images load, and a
screenshot that is not blank. Without the browser the browser tests skip, except where
QUESTBENCH_REQUIRE_BROWSER is set (CI), where they fail."""
import os
import re
import shutil
from html.parser import HTMLParser

import pytest

from conftest import write_tiny_pair

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """A tiny pair's run (clean, 2 corruptions x 2 severities, an FGSM sweep), its markdown and its page."""
    import questbench
    from questbench.report.leaderboard import leaderboard
    from questbench.run.runner import run_suite
    from questbench.config.suite import parse_suite
    folder = tmp_path_factory.mktemp("page")
    reg = write_tiny_pair(folder)
    text = (f'registry = ["{reg}"]\nmodels = ["tiny-std", "tiny-quest"]\nnum_workers = 0\nbatch_size = 16\n'
            '[data]\nsamples = 40\n[corruptions]\nnames = ["gaussian_noise", "contrast"]\nseverities = [2, 5]\n'
            'engine = "torch"\nparams = "cifar-c"\n[[attacks]]\nattack = "fgsm"\neps = [0, "2/255", "8/255"]\n')
    run_suite(parse_suite(text, "t.toml"), folder / "res", device="cpu", quiet=True)
    md = leaderboard(folder / "res", "md", str(folder / "lb.md"))
    html_text = leaderboard(folder / "res", "html", str(folder / "lb.html"), images_per_cell=3)
    return folder, md, html_text, questbench.load_results(folder / "res")


def _md_tables(md: str) -> dict[str, list[list[str]]]:
    """Section title -> the rows (header first) of the first table under it."""
    out = {}
    for block in re.split(r"^## ", md, flags=re.M)[1:]:
        title, _, rest = block.partition("\n")
        rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in rest.splitlines()
                if line.startswith("|") and not line.startswith("|---")]
        if rows:
            out[title.strip()] = rows
    return out


class _Tables(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables, self.title, self.in_h2, self.cell = {}, None, False, None

    def handle_starttag(self, tag, attrs):
        if tag == "h2":
            self.in_h2, self.title = True, ""
        elif tag == "table":
            self.tables.setdefault(self.title, [])
        elif tag == "tr":
            self.tables[self.title].append([])
        elif tag in ("td", "th"):
            self.cell = ""

    def handle_endtag(self, tag):
        if tag == "h2":
            self.in_h2 = False
        elif tag in ("td", "th"):
            self.tables[self.title][-1].append(self.cell.strip())
            self.cell = None

    def handle_data(self, data):
        if self.in_h2:
            self.title += data
        elif self.cell is not None:
            self.cell += data


@pytest.mark.slow
def test_page_has_the_markdowns_tables_and_fetches_nothing(page):
    folder, md, html_text, _ = page
    parser = _Tables()
    parser.feed(html_text)
    md_tables = _md_tables(md)
    assert md_tables and set(md_tables) <= set(parser.tables)
    for title, rows in md_tables.items():
        got = parser.tables[title]
        if title.startswith("Paired:"):  # the page adds the images column
            got = [r[:-1] for r in got]
        assert got == rows, title
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html_text)  # nothing from the network
    assert re.search(r"This page: [\d,]+ KB", html_text) and "discordant images inlined" in html_text
    assert (folder / "lb.html").read_text() == html_text
    assert html_text.count('<img alt="') >= 2  # the plots, inlined


def test_the_two_pages_made_together_equal_each_made_alone(page, tmp_path):
    """write_pages draws the plots once for both pages: the html that inlines the markdown's plot files is the
    page rendered on its own, byte for byte, and so is the markdown (which would differ if a plot were missing
    or another table's plot were read)."""
    from questbench.report.leaderboard import render, write_pages
    _, _, _, results = page
    board = tmp_path / "lb.md"
    write_pages(results, board)
    alone = tmp_path / "alone" / "lb.md"
    alone.parent.mkdir()
    assert board.read_text() == render(results, "md", alone)
    assert board.with_suffix(".html").read_text() == render(results, "html")
    pngs = sorted(p.name for p in tmp_path.glob("lb_*.png"))
    assert pngs and pngs == sorted(p.name for p in alone.parent.glob("lb_*.png"))
    assert all((tmp_path / n).read_bytes() == (alone.parent / n).read_bytes() for n in pngs)


def test_render_study_writes_both_pages_through_write_pages(page, tmp_path):
    """tools/render_study.py's page writer (a study's pages) gives the pages write_pages gives."""
    import importlib.util
    from pathlib import Path
    from questbench.report.leaderboard import write_pages
    spec = importlib.util.spec_from_file_location("render_study",
                                                  Path(__file__).parents[1] / "tools" / "render_study.py")
    render_study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render_study)
    _, _, _, results = page
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    render_study.write_study_pages(results, tmp_path / "a" / "study")
    write_pages(results, tmp_path / "b" / "study.md")
    for suffix in (".md", ".html"):
        assert (tmp_path / "a" / f"study{suffix}").read_text() == (tmp_path / "b" / f"study{suffix}").read_text()
    # a plan naming a model not yet run: both pages open with the interim line, escaped for each
    plan = ("s<1>", list(results.samples.model.unique()) + ["ghost-s9"])
    render_study.write_study_pages(results, tmp_path / "a" / "study", plan)
    md = (tmp_path / "a" / "study.md").read_text().splitlines()
    assert md[2].startswith("**Interim: ") and "suite s&lt;1&gt; names" in md[2], md[2]
    assert "<strong>Interim: " in (tmp_path / "a" / "study.html").read_text()
    assert "s&lt;1&gt;" in (tmp_path / "a" / "study.html").read_text()


def test_many_cells_get_fewer_images_each_and_the_page_says_so(page):
    from questbench.report.discordant import discordant_cells
    from questbench.report.html import render_html
    _, _, _, results = page
    cells = discordant_cells(results, "tiny-quest", "tiny-std")
    budgeted = render_html(results, per_cell=3, max_images=2 * len(cells))
    assert "(1 per side of each setting at most, fewer than the 3 asked so that the page holds at most about" \
        in budgeted
    shown = {(s.sample_id, c.view) for c in cells for s in c.model_right[:1] + c.baseline_right[:1]}  # each once
    assert re.search(rf"plots and {len(shown)} discordant images inlined", budgeted)


def test_discordant_cells_are_the_samples_one_model_gets_right():
    """Closed form on a hand-made results table: per setting, right-for-one samples and their counts."""
    import pandas as pd

    from questbench.report.discordant import discordant_cells
    from questbench.store.results import Results
    rows = []
    for model, correct in (("std", [1, 1, 0, 0, 1]), ("quest", [1, 0, 1, 1, 0])):
        for i, ok in enumerate(correct):
            rows.append({"model": model, "attention": model, "evaluation": "clean", "setting": "clean",
                         "sample_id": f"s{i}", "label": 3, "pred": 3 if ok else 7, "correct": bool(ok),
                         "corruption": None, "severity": None, "eps": None, "attack": None, "sweep": None})
    results = Results(samples=pd.DataFrame(rows), diagnostics=pd.DataFrame(), jobs=pd.DataFrame(), provenance={},
                      missing_jobs=[])
    (cell,) = discordant_cells(results, "quest", "std", cap=1)
    assert (cell.n_model_right, cell.n_baseline_right, cell.n_shared) == (2, 2, 5)
    assert [s.sample_id for s in cell.model_right] == ["s2"] and [s.sample_id for s in cell.baseline_right] == ["s1"]
    assert (cell.model_right[0].pred_model, cell.model_right[0].pred_baseline) == (3, 7)


@pytest.mark.slow
def test_bad_results_folders_give_the_markdowns_one_line_errors(tmp_path):
    import subprocess
    import sys
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "absent"):
        errs = []
        for fmt in ("md", "html"):
            r = subprocess.run([sys.executable, "-m", "questbench.cli", "leaderboard", str(folder), "--format", fmt],
                               capture_output=True, text=True)
            assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
            errs.append(r.stderr)
        assert errs[0] == errs[1]


@pytest.fixture(scope="module")
def browser():
    missing = [what for what, ok in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)) if not ok]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium")
    if missing:
        if os.environ.get("QUESTBENCH_REQUIRE_BROWSER"):
            pytest.fail(f"no {', '.join(missing)} (QUESTBENCH_REQUIRE_BROWSER is set)")
        pytest.skip(f"no {', '.join(missing)}: apt-get install chromium chromium-driver; pip install selenium")
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        opts.add_argument(arg)
    opts.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def _rows(table):
    from selenium.webdriver.common.by import By
    return [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr")]


@pytest.mark.slow
def test_page_in_a_real_browser(page, browser, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By
    folder, md, _, _ = page
    browser.get((folder / "lb.html").as_uri())
    tables = {t.find_element(By.XPATH, "preceding-sibling::h2[1]").text: t
              for t in browser.find_elements(By.CSS_SELECTOR, "table.sortable")}
    # the headline's cells as the browser shows them equal the markdown's
    headline = _md_tables(md)["Headline"]
    assert _rows(tables["Headline"]) == headline[1:]
    # clicking a header sorts by that column, and a second click reverses it
    sweep = tables["Attack sweeps"]
    header = [th.text for th in sweep.find_elements(By.CSS_SELECTOR, "thead th")]
    col = next(i for i, h in enumerate(header) if h.startswith("FGSM"))
    before = _rows(sweep)
    value = lambda r: float(re.match(r"[-+]?[0-9.]+", r[col])[0])  # noqa: E731
    sweep.find_elements(By.CSS_SELECTOR, "thead th")[col].click()
    after = _rows(sweep)
    assert sorted(after) == sorted(before) and [value(r) for r in after] == sorted(value(r) for r in before)
    sweep.find_elements(By.CSS_SELECTOR, "thead th")[col].click()
    assert [value(r) for r in _rows(sweep)] == sorted((value(r) for r in before), reverse=True)
    # the page's sort is numeric where a column is (10 after 9, "+1.5 to +2" by its first number), else by text
    order = browser.execute_script("""
        const t = document.createElement('table'); t.className = 'sortable';
        t.innerHTML = '<thead><tr><th>x</th><th>y</th></tr></thead><tbody>' +
            ['10', '9', '100.00*', '-2.5 to +1', 'n=385'].map((v, i) => `<tr><td>${v}</td><td>b${4 - i}</td></tr>`)
            .join('') + '</tbody>';
        document.body.appendChild(t);
        sortBy(t.tHead.rows[0].cells[0]);
        const first = Array.from(t.tBodies[0].rows).map(r => r.cells[0].textContent);
        sortBy(t.tHead.rows[0].cells[1]);
        return [first, Array.from(t.tBodies[0].rows).map(r => r.cells[1].textContent)];""")
    assert order == [["-2.5 to +1", "9", "10", "100.00*", "n=385"], ["b0", "b1", "b2", "b3", "b4"]]
    # a paired row's images button opens a panel whose images loaded
    buttons = browser.find_elements(By.CSS_SELECTOR, "button.images")
    assert buttons
    browser.execute_script("arguments[0].scrollIntoView()", buttons[0])
    buttons[0].click()
    images = browser.find_elements(By.CSS_SELECTOR, ".panel img")
    assert images
    widths = [browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", im) for im in images]
    assert all(w and w > 0 for w in widths)
    assert "right for tiny-quest, wrong for the other" in browser.find_element(By.CSS_SELECTOR, ".panel").text
    shot = tmp_path / "page.png"
    assert browser.save_screenshot(str(shot))
    pixels = Image.open(shot).convert("L")
    lo, hi = pixels.getextrema()
    assert hi - lo > 100 and len(pixels.getcolors(1 << 16)) > 10  # text and images, not a blank page
