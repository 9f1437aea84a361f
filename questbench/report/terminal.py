"""The leaderboard in a terminal, through rich."""
from __future__ import annotations

import re
from typing import Optional

from ..store.results import Results
from .sections import cell_text, missing_jobs_text, sections
from .tables import Tables, compute_tables


_TEXT_COLUMNS = ("model", "attention", "baseline", "evaluation", "setting", "corruption", "eps")


def render_rich(results: Results, t: Optional[Tables] = None, *, console=None) -> None:
    """The leaderboard for a terminal of any width: tables take the console's width (never a forced one) and
    fold long cells onto further lines instead of cutting them. ``t``: the results' tables when the caller has
    them already."""
    from rich import box
    from rich.console import Console
    from rich.markup import escape  # names are data: a "[bold]" in a model name is text, not markup
    from rich.table import Table

    console = console or Console()
    t = t if t is not None else compute_tables(results)
    for title, df, notes, _ in sections(t):
        # long evaluation labels become sub-titles, so a paired table fits 80 columns
        parts = [(f"{title} / {ev}", g.drop(columns="evaluation")) for ev, g in df.groupby("evaluation", sort=False)] \
            if "evaluation" in df.columns else [(title, df)]
        for sub, part in parts:
            table = Table(title=escape(sub), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
            sizes = []
            for c in part.columns:
                text = c in _TEXT_COLUMNS  # names stay whole on one line
                m = re.search(r" \(n=(\d+)\)(\*?)$", str(c))  # n moves to a line under the table
                header = str(c)[:m.start()] + m.group(2) if m else str(c)
                if m:
                    sizes.append(f"{header.rstrip('*')} {m.group(1)}{m.group(2)}")
                table.add_column(escape(header), justify="left" if text else "right", overflow="fold",
                                 no_wrap=text)
            for _, r in part.iterrows():
                table.add_row(*(escape(cell_text(r[c])) for c in part.columns))
            console.print(table)
            if sizes:
                console.print("n: " + escape(", ".join(sizes)))
        for n in notes:
            console.print(f"[dim]{escape(n)}[/dim]")
    if results.missing_jobs:  # what `questbench run` shows must say so too, not only the markdown and html
        console.print(f"[yellow]Missing jobs:[/yellow] {escape(missing_jobs_text(len(results.missing_jobs)))}")
        for j in results.missing_jobs:
            console.print(f"  {escape(j)}")
    for f in t.flags:
        console.print(f"[yellow]Flags:[/yellow] {escape(f)}")
