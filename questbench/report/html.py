"""The leaderboard as one self-contained web page: the markdown's tables with the same cells and notes, columns
sortable by clicking a header, the plots inlined, the provenance, and - opened from the paired tables' rows -
the discordant images of each setting (right for one model, wrong for the other). Styles, script, plots and
images are inlined: the file opens from disk with no network."""
from __future__ import annotations

import base64
import html
import re
import tempfile
from pathlib import Path
from typing import Optional

from ..errors import QuestbenchError
from ..store.results import Results
from .compare import AGGREGATE, RELATIVE
from .markdown import provenance_lines
from .escaping import script_json
from .plots import FOREST_TITLE
from .sections import cell_text, missing_jobs_text, sections, short_names
from .tables import Tables, compute_tables

DEFAULT_PER_CELL = 6  # discordant images shown per side of a cell; the page gives the count of the rest
MAX_IMAGES = 2000  # a page's image budget (~2 KB each): many pairs get fewer images per cell, not a huge page

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:1200px;padding:0 16px;
color:#222}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:3px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid #d6d6d6;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f3f3f3;cursor:pointer;user-select:none;white-space:nowrap}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
tbody tr:nth-child(even){background:#fafafa}
blockquote{margin:6px 0 6px 0;padding:2px 10px;border-left:3px solid #ccc;color:#555;font-size:12.5px}
button.images{font-size:12px;padding:1px 6px;cursor:pointer}
.panel{border:1px solid #bbb;background:#fff;padding:8px 12px;margin:6px 0 14px 0}
.panel h3{font-size:14px;margin:4px 0}.cell{margin:6px 0 10px 0}
.cell .side{margin:2px 0 2px 0;font-size:12.5px}
figure{display:inline-block;margin:2px 6px 2px 0;text-align:center;font-size:11px;width:112px;vertical-align:top}
figcaption{white-space:pre-line}
figure img{width:64px;height:64px;image-rendering:pixelated;border:1px solid #999}
.plot img{max-width:100%}.meta{color:#666;font-size:12.5px}
"""

SCRIPT = """
function cellValue(td){const t=td.textContent.trim();const m=t.match(/^[^0-9+-]*([-+]?[0-9]+(?:\\.[0-9]+)?)/);
 return m?parseFloat(m[1]):null}
function sortBy(th){const table=th.closest('table');const body=table.tBodies[0];const col=th.cellIndex;
 const dir=th.getAttribute('aria-sort')==='ascending'?'descending':'ascending';
 for(const h of table.tHead.rows[0].cells)h.removeAttribute('aria-sort');th.setAttribute('aria-sort',dir);
 const rows=Array.from(body.rows);const nums=rows.map(r=>cellValue(r.cells[col]));
 const numeric=nums.every(v=>v!==null);const sign=dir==='ascending'?1:-1;
 const order=rows.map((r,i)=>[r,i]);
 order.sort((a,b)=>{let c;if(numeric){c=nums[a[1]]-nums[b[1]]}else{
   c=a[0].cells[col].textContent.localeCompare(b[0].cells[col].textContent)}return sign*c||a[1]-b[1]});
 for(const [r] of order)body.appendChild(r)}
for(const th of document.querySelectorAll('table.sortable thead th'))th.addEventListener('click',()=>sortBy(th));
function openPanel(button){const id=button.dataset.panel;let panel=document.getElementById(id);
 if(panel){panel.hidden=!panel.hidden;return}
 const spec=PANELS[id];panel=document.createElement('div');panel.className='panel';panel.id=id;
 const h=document.createElement('h3');h.textContent=spec.title;panel.appendChild(h);
 for(const c of spec.cells){const div=document.createElement('div');div.className='cell';
  const t=document.createElement('div');t.innerHTML='<b></b> <span class=meta></span>';
  t.firstChild.textContent=c.setting;t.lastChild.textContent=c.caption;div.appendChild(t);
  for(const side of c.sides){const s=document.createElement('div');s.className='side';
   s.textContent=side.text;div.appendChild(s);
   for(const f of side.shown){const fig=document.createElement('figure');const img=document.createElement('img');
    img.src=IMAGES[f.img];img.alt=f.sample_id;fig.appendChild(img);const cap=document.createElement('figcaption');
    cap.textContent=f.caption;fig.appendChild(cap);div.appendChild(fig)}}
  panel.appendChild(div)}
 const table=button.closest('table');table.after(panel)}
for(const b of document.querySelectorAll('button.images'))b.addEventListener('click',()=>openPanel(b));
"""


def _table(df, extra: Optional[list[str]] = None) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns) + ("<th>images</th>" if extra else "")
    rows = []
    for k, (_, r) in enumerate(df.iterrows()):
        cells = "".join(f"<td>{html.escape(cell_text(r[c]))}</td>" for c in df.columns)
        if extra:
            cells += f"<td>{extra[k]}</td>"
        rows.append(f"<tr>{cells}</tr>")
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _plot_html(title: str, uri: str) -> str:
    return (f'<h2>{html.escape(title[:1].upper() + title[1:])}</h2><p class=plot><img alt="{html.escape(title)}"'
            f' src="{uri}"></p>')


def _plots(t, results: Results, made: Optional[tuple[Path, list[tuple[str, str]]]] = None) -> list[tuple[str, str]]:
    """The plots as (title, data URI); ``made``: (folder, (title, file name) pairs) of plots already drawn
    for this page's markdown twin, read instead of drawn again."""
    if made is not None:
        folder, written = made
        return [(title, "data:image/png;base64," + base64.b64encode((Path(folder) / rel).read_bytes()).decode())
                for title, rel in written]
    from .plots import write_plots
    with tempfile.TemporaryDirectory() as tmp:
        return _plots(t, results, (Path(tmp), write_plots(t, Path(tmp) / "page.md", results.diagnostics)))


class _Panels:
    """The discordant-image panels of the paired tables, built once per pair: a JSON spec per panel and one
    shared image table, so an image shown under several rows is inlined once."""

    def __init__(self, results: Results, t: Tables, per_cell: int, max_images: int = MAX_IMAGES):
        from .discordant import discordant_cells, pairs_of
        self.specs: dict[str, dict] = {}
        self.per_cell = per_cell
        self.note = ""
        self.thumbs = None
        self.cells: dict = {}
        self.image_ids: dict[str, int] = {}
        self.images: list[str] = []
        pairs = pairs_of(t.pairs)
        if not pairs or per_cell <= 0:
            return
        try:
            from .thumbnails import Thumbnails
            self.thumbs = Thumbnails(results)
        except (QuestbenchError, OSError, ValueError) as exc:
            self.note = f"No images: {exc}."
            return
        for model, baseline in pairs:
            self.cells[model, baseline] = discordant_cells(results, model, baseline, per_cell)
        sides = 2 * sum(len(c) for c in self.cells.values())
        self.per_cell = per_cell
        if sides * per_cell > max_images:  # keep the page's size bounded: fewer per cell, at least one
            self.per_cell = max(1, max_images // sides)
            for cells in self.cells.values():
                for c in cells:
                    c.model_right, c.baseline_right = c.model_right[:self.per_cell], c.baseline_right[:self.per_cell]

    def button(self, model: str, baseline: str, evaluation: str, setting: str) -> str:
        cells = [c for c in self.cells.get((model, baseline), []) if c.evaluation == evaluation
                 and (c.setting == setting or setting in (AGGREGATE, RELATIVE))]
        if not cells:
            return ""
        pid = f"panel-{len(self.specs)}"
        try:
            spec = [self._cell(c, model, baseline) for c in cells]
        except (QuestbenchError, OSError, ValueError) as exc:  # the dataset found here is not the run's
            self.note = f"No images: {str(exc).splitlines()[0]}."
            self.cells = {}
            return ""
        self.specs[pid] = {"title": f"{model} vs {baseline}: {evaluation}, {setting}", "cells": spec}
        right_m, right_b = sum(c.n_model_right for c in cells), sum(c.n_baseline_right for c in cells)
        return (f'<button class="images" data-panel="{pid}" title="images right for one model and wrong for the '
                f'other">{right_m} / {right_b}</button>')

    def _cell(self, c, model: str, baseline: str) -> dict:
        names = self.thumbs.class_names
        short = short_names([baseline, model])
        name = (lambda k: names[k] if names and 0 <= k < len(names) else str(k))
        view = c.view if (c.view[0] != "corruption" or self.thumbs.on_the_fly()) else ("clean",)
        caption = {"corruption": "images as the models saw them (corrupted, remade from the run's seed)",
                   "clean": "clean test images"}[view[0]]
        if c.evaluation not in ("clean", "corruption"):
            caption = f"clean test images: the adversarial images ({c.evaluation}, {c.setting}) are not stored"
        elif view != c.view:
            caption = "clean test images: the released corrupted files are not read for the page"
        sides = []
        for who, shown, n in ((model, c.model_right, c.n_model_right), (baseline, c.baseline_right,
                                                                         c.n_baseline_right)):
            uris = self.thumbs.add([s.sample_id for s in shown], view)
            figs = []
            for s, uri in zip(shown, uris):
                if uri not in self.image_ids:
                    self.image_ids[uri] = len(self.images)
                    self.images.append(uri)
                figs.append({"img": self.image_ids[uri], "sample_id": s.sample_id,
                             "caption": f"{s.sample_id}\ntrue: {name(s.label)}\n{short[baseline]}: "
                                        f"{name(s.pred_baseline)}\n{short[model]}: {name(s.pred_model)}"})
            rest = n - len(shown)
            sides.append({"text": f"right for {who}, wrong for the other: {n} of {c.n_shared}"
                                  + (f" ({len(shown)} shown, {rest} more)" if rest > 0 else ""), "shown": figs})
        return {"setting": c.setting, "caption": caption, "sides": sides}


def render_html(results: Results, t: Optional[Tables] = None, *, per_cell: int = DEFAULT_PER_CELL,
                max_images: int = MAX_IMAGES, plots: Optional[tuple[Path, list[tuple[str, str]]]] = None) -> str:
    """The page; ``per_cell`` images per side of each discordant cell (0: no images), fewer where the page
    would need more than ``max_images`` slots. ``t``: the results' tables when the caller has them already;
    ``plots``: (folder, (title, file name) pairs) of the same tables' plots, already drawn there."""
    t = t if t is not None else compute_tables(results)
    name = results.run.suite.name
    panels = _Panels(results, t, per_cell, max_images)
    body = [f"<h1>questbench leaderboard: {html.escape(name)}</h1>", "<p class=meta>{SIZE}</p>"]
    if t.interim:
        body.append(f"<p><strong>{html.escape(t.interim)}</strong></p>")
    plots = _plots(t, results, plots)
    for i, (title, df, notes, pair) in enumerate(sections(t)):
        body.append(f'<h2 id="{_slug(title)}">{html.escape(title)}</h2>')
        extra = None
        if pair is not None and panels.thumbs is not None:
            extra = [panels.button(pair[0], pair[1], r.evaluation, r.setting) for r in df.itertuples()]
        body.append(_table(df, extra))
        body += [f"<blockquote>{html.escape(n)}</blockquote>" for n in notes]
        if i == 0:  # a study's forest plot follows its first table
            body += [_plot_html(title, uri) for title, uri in plots if title == FOREST_TITLE]
    if results.missing_jobs:
        body.append("<h2>Missing jobs</h2><p>" + html.escape(missing_jobs_text(len(results.missing_jobs)))
                    + "</p><ul>" + "".join(f"<li><code>{html.escape(j)}</code></li>" for j in results.missing_jobs) + "</ul>")
    if t.flags:
        body.append("<h2>Flags</h2><ul>" + "".join(f"<li>{html.escape(f)}</li>" for f in t.flags) + "</ul>")
    body += [_plot_html(title, uri) for title, uri in plots if title != FOREST_TITLE]
    body.append("<h2>Provenance</h2><ul>" + "".join(
        f"<li>{html.escape(line.removeprefix('- '))}</li>" for line in provenance_lines(results, plain=True)) + "</ul>")
    data = f"const PANELS={script_json(panels.specs)};\nconst IMAGES={script_json(panels.images)};\n"
    page = ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f"<title>questbench leaderboard: {html.escape(name)}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(body) + f"\n<script>\n{data}{SCRIPT}</script>\n</body></html>\n")
    n_images = len(panels.images)
    size = (f"Generated by questbench from {html.escape(str(name))}. This page: {{KB}} KB, self-contained "
            f"(styles, script, plots and {n_images} discordant images inlined; nothing is fetched)."
            + (f" {html.escape(panels.note)}" if panels.note else "")
            + (" The 'images' buttons of the paired tables open the images right for one model and wrong for "
               f"the other ({panels.per_cell} per side of each setting at most"
               + (f", fewer than the {per_cell} asked so that the page holds at most about {max_images:,} images"
                  if panels.per_cell < per_cell else "") + ")." if panels.specs else ""))
    page = page.replace("{SIZE}", size)
    kb = round(len(page.encode()) / 1024)
    return page.replace("{KB}", f"{kb:,}")
