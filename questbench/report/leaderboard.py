"""`questbench leaderboard`: a results folder rendered in one of the formats, to stdout or a file."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import QuestbenchError
from ..store.results import load_results
from .html import render_html
from .markdown import render_markdown
from .terminal import render_rich
from .tidy import render_csv

FORMATS = ("md", "rich", "csv", "html")


def render(results, fmt: str = "md", output: Optional[Path] = None, images_per_cell: int = 6, t=None) -> str:
    """Loaded results in one format: md (its plots written beside ``output`` when given), csv, html; rich is
    printed to the terminal and gives "". ``t``: the results' tables when the caller has them already (one
    computation for several renderings). Every renderer takes (results, t) and its own options by keyword."""
    if fmt not in FORMATS:
        raise QuestbenchError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if fmt == "rich":
        render_rich(results, t)
        return ""
    if fmt == "html":
        return render_html(results, t, per_cell=images_per_cell)
    if fmt == "md":
        return render_markdown(results, t, output=output)
    return render_csv(results, t)


def write_pages(results, board: Path, t=None) -> None:
    """``board`` (markdown, its plots beside it) and its html twin: the tables computed once (when ``t`` is not
    given) and the plots drawn once, for both pages. Each file is written whole or not at all."""
    from .._io import atomic_write_bytes
    from .plots import write_plots
    from .tables import compute_tables

    t = t if t is not None else compute_tables(results)
    plots = write_plots(t, board, results.diagnostics)
    atomic_write_bytes(board, render_markdown(results, t, output=board, plots=plots).encode())
    atomic_write_bytes(board.with_suffix(".html"), render_html(results, t, plots=(board.parent, plots)).encode())


def leaderboard(results_dir, fmt: str = "md", output: Optional[str] = None, images_per_cell: int = 6,
                models: Optional[list[str]] = None) -> Optional[str]:
    """`questbench leaderboard`: the results of a folder (or of several, joined) rendered, to ``output`` or
    returned (rich: printed, None); ``models``: only these of them."""
    if fmt not in FORMATS:
        raise QuestbenchError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if output is not None:
        from .._io import check_output_file
        check_output_file(output)
    results = load_results(results_dir)
    if models:
        from ..store.combine import select_models
        results = select_models(results, models)
    if results.samples.empty and results.diagnostics.empty:
        where = ", ".join(map(str, results_dir)) if isinstance(results_dir, (list, tuple)) else results_dir
        raise QuestbenchError(f"{where} holds no finished jobs")
    out_path = Path(output) if output else None
    text = render(results, fmt, out_path, images_per_cell)
    if fmt == "rich":
        return None
    if out_path is not None:
        from .._io import atomic_write_bytes
        atomic_write_bytes(out_path, text.encode())
    return text
