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


def leaderboard(results_dir, fmt: str = "md", output: Optional[str] = None, images_per_cell: int = 6
                ) -> Optional[str]:
    if fmt not in FORMATS:
        raise QuestbenchError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if output is not None:
        from .._io import check_output_file
        check_output_file(output)
    results = load_results(results_dir)
    if results.samples.empty and results.diagnostics.empty:
        where = ", ".join(map(str, results_dir)) if isinstance(results_dir, (list, tuple)) else results_dir
        raise QuestbenchError(f"{where} holds no finished jobs")
    if fmt == "rich":
        render_rich(results)
        return None
    out_path = Path(output) if output else None
    if fmt == "html":
        text = render_html(results, images_per_cell)
    elif fmt == "md":
        text = render_markdown(results, out_path)
    else:
        text = render_csv(results)
    if out_path is not None:
        from .._io import atomic_write_bytes
        atomic_write_bytes(out_path, text.encode())
    return text
