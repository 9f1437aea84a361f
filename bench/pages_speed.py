"""The two pages of a run (markdown with its plots, and html) made one after the other as two renderings, against
``write_pages``, which draws the plots once for both; the tables are computed once beforehand for both ways and the
imports are warmed, so the ratio is the pages' own time. Alternating rounds, each in a fresh temporary folder.

    python bench/pages_speed.py RESULTS_DIR [--rounds 3]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from questbench._io import atomic_write_bytes
from questbench.report.leaderboard import render, write_pages
from questbench.report.tables import compute_tables
from questbench.store.results import load_results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    results = load_results(a.results)
    tables = compute_tables(results)
    render(results, "html", t=tables)  # warm: torchvision (jpeg thumbnails) and matplotlib are imported once
    for rnd in range(a.rounds):
        with tempfile.TemporaryDirectory() as d:
            board = Path(d) / "lb.md"
            t0 = time.perf_counter()
            atomic_write_bytes(board, render(results, "md", board, t=tables).encode())
            atomic_write_bytes(board.with_suffix(".html"), render(results, "html", t=tables).encode())
            t1 = time.perf_counter()
            write_pages(results, board, tables)
            t2 = time.perf_counter()
        print(f"round {rnd}: two renderings {t1 - t0:.2f} s, write_pages {t2 - t1:.2f} s, "
              f"ratio {(t2 - t1) / (t1 - t0):.3f}", flush=True)


if __name__ == "__main__":
    main()
