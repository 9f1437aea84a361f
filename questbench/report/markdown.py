"""The leaderboard as markdown, with its plots written beside the file."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Optional

import pandas as pd

from ..store.results import Results
from .escaping import md_code, md_text
from .plots import FOREST_TITLE
from .sections import cell_text, missing_jobs_text, sections
from .tables import Tables, compute_tables


def _md_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(md_text(c) for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(md_text(cell_text(r[c])) for c in cols) + " |")
    return "\n".join(lines)


def provenance_lines(results: Results, plain: bool = False) -> list[str]:
    """The provenance as list items; ``plain``: names unescaped (for a renderer that escapes for its own format)."""
    code, text = ((lambda v: f"`{v}`"), str) if plain else (md_code, md_text)
    p = results.run
    v = p.versions
    lines = [f"- suite: {code(p.suite.name)} (sha256 `{p.suite_sha256[:12]}`), seed {p.seed}",
             f"- dataset: {p.dataset.name} {p.dataset.split} ({p.dataset.source}), "
             f"{len(p.sample_ids.get('clean', []))} clean samples",
             f"- device: {p.device_name}, dtype {p.dtype}",
             f"- corruptions: {p.corruption_implementation}",
             "- versions: " + ", ".join(f"{k} {v[k]}" for k in sorted(v))]
    if not results.jobs.empty and "wall_s" in results.jobs:
        lines.append(f"- run time: {float(results.jobs.wall_s.sum()):.1f} s in {len(results.jobs)} jobs (the jobs' "
                     "own wall times, summed; ranks running side by side make the run shorter)")
        reused = results.jobs.reused_from.dropna() if "reused_from" in results.jobs else []
        if len(reused):
            lines.append(f"- reused: {len(reused)} of the {len(results.jobs)} jobs were copied from "
                         + ", ".join(code(f) for f in sorted(set(reused)))
                         + " (`--reuse`: the same identity hash, so the configuration that made them; their wall "
                         "times are those runs')")
    for src in p.sources:
        lines.append(f"- results folder {code(src.folder)}: {len(src.models)} model(s) on "
                     f"{text(src.device_name)}, suite sha256 `{src.suite_sha256[:12]}`, "
                     + ", ".join(f"{k} {src.versions[k]}" for k in ("torch", "timm") if k in src.versions))
    if p.selected_from is not None:
        lines.append(f"- models: {len(p.models)} of the {p.selected_from} in these results (`--models`)")
    for name, m in sorted(p.models.items()):
        where = f", from {code(m.folder)}" if m.folder is not None else ""
        lines.append(f"- {code(name)}: {text(m.arch)} / {text(m.attention)}, sha256 {code(m.sha256[:12])}{where}")
    return lines


def render_markdown(results: Results, t: Optional[Tables] = None, *, output: Optional[Path] = None,
                    plots: Optional[list[tuple[str, str]]] = None) -> str:
    """The leaderboard as markdown; with ``output``, its plots are written beside that file, unless ``plots``
    names them already written there ((title, file name) pairs, from ``write_plots``). ``t``: the results'
    tables when the caller has them already."""
    t = t if t is not None else compute_tables(results)
    name = results.run.suite.name
    parts = [f"# questbench leaderboard: {md_text(name)}", ""]
    if t.interim:
        parts += [f"**{md_text(t.interim)}**", ""]
    if plots is None:
        plots = []
        if output is not None:
            from .plots import write_plots
            plots = write_plots(t, output, results.diagnostics)
    lead = [p for p in plots if p[0] == FOREST_TITLE]  # a study's forest plot follows its first table
    for i, (title, df, notes, _) in enumerate(sections(t)):
        parts += [f"## {md_text(title)}", "", _md_table(df), ""]
        for n in notes:  # prose wrapped to 100 columns of source, like the tables
            parts += [f"> {line}" for line in textwrap.wrap(md_text(n), 98)] + [">"]
        if notes:
            parts[-1] = ""
        if i == 0:
            parts += [item for title, rel in lead for item in (f"![{md_text(title)}]({rel})", "")]
    if results.missing_jobs:
        parts += ["## Missing jobs", "", missing_jobs_text(len(results.missing_jobs)), ""] \
            + [f"- `{j}`" for j in results.missing_jobs] + [""]
    if t.flags:
        parts += ["## Flags", ""] + [f"- {md_text(f)}" for f in t.flags] + [""]
    for title, rel in plots:
        if title != FOREST_TITLE:
            parts += [f"![{md_text(title)}]({rel})", ""]
    parts += ["## Provenance", ""] + provenance_lines(results) + [""]
    return "\n".join(parts)
