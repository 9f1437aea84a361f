"""Render a study's pages from its seed folders (tools/run_study_by_seed.py) with one load and one computation of
the tables per page: the whole study, and the page of a narrower suite whose models are a subset of it.

    python tools/render_study.py runs/study/fmnist-ablation --to leaderboards/fmnist-ablation \\
        --subset fmnist-seeds=leaderboards/fmnist-seeds

writes fmnist-ablation.md (plots beside it) and .html, and fmnist-seeds.md/.html from the same results narrowed
to fmnist-seeds' models. Only finished seed folders (every planned job present) are read; the others are named
and left out, so a page made while the study runs says how many seeds it holds.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Optional

from questbench.config.suite import load_suite
from questbench.errors import QuestbenchError
from questbench.report.leaderboard import write_pages
from questbench.store.combine import select_models
from questbench.store.results import load_results


def finished(folder: Path) -> bool:
    """Every job the folder's plan names has its file."""
    plan = json.loads((folder / "provenance.json").read_text()).get("jobs", {})
    return bool(plan) and all((folder / "jobs" / f"{job}.json").is_file() for job in plan)


def seed_folders(study: Path) -> list[Path]:
    """The study's ``s<seed>`` result folders in seed order (not ``replaced/``, where folders of an earlier suite
    wait to be reused, nor ``suites/``)."""
    return sorted((p for p in study.glob("s*") if p.name[1:].isdigit() and (p / "provenance.json").is_file()),
                  key=lambda p: int(p.name[1:]))


def _seeds(models) -> set[str]:
    """The seeds named by models' ``-s<seed>`` suffixes (the zoo's naming)."""
    return {m.group(1) for m in (re.search(r"-s(\d+)$", name) for name in models) if m}


def interim_note(present, planned: list[str], suite: str):
    """The page's first line when some of the suite's models have not finished: how many have, of how many seeds,
    and that a verdict read now is an interim look. None when every planned model is there."""
    done = set(present) & set(planned)
    if not planned or len(done) == len(set(planned)):
        return None
    done_seeds, all_seeds = _seeds(done), _seeds(planned)
    of_seeds = f" (the models of {len(done_seeds)} of its {len(all_seeds)} seeds)" if all_seeds else ""
    return (f"Interim: {len(done)} of the {len(planned)} models suite {suite} names have finished"
            f"{of_seeds}. The study's analysis is at all of them; a verdict read before then is an interim look, "
            "not that analysis.")


def write_study_pages(results, stem: Path, plan: Optional[tuple[str, list[str]]] = None) -> None:
    """``plan``: the study's suite and the models it names; when some are missing the page says first that it is
    interim."""
    from questbench.report.tables import compute_tables

    t0 = time.perf_counter()
    md = stem.with_suffix(".md")
    t = compute_tables(results)
    if plan is not None:
        t.interim = interim_note(results.samples.model.unique(), plan[1], plan[0])
    write_pages(results, md, t)
    print(f"{md} and .html: {results.samples.model.nunique()} models, {time.perf_counter() - t0:.0f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path, help="the folder holding s<seed> result folders")
    ap.add_argument("--to", type=Path, required=True, help="the page's path without suffix")
    ap.add_argument("--subset", action="append", default=[], metavar="SUITE=PATH",
                    help="also the page of this built-in suite's models, at PATH (without suffix)")
    a = ap.parse_args()
    folders = seed_folders(a.study)
    done = [p for p in folders if finished(p)]
    for p in sorted(set(folders) - set(done)):
        print(f"{p}: not finished, left out", flush=True)
    if not done:
        sys.exit(f"no finished seed folder in {a.study}")
    print(f"{len(done)} finished seed folder(s): {', '.join(p.name for p in done)}", flush=True)
    results = load_results(done)
    name = results.run.suite.name
    try:  # a study of a built-in suite knows its plan; another folder's page is written without the interim line
        plan = (name, load_suite(name).models)
    except QuestbenchError:
        plan = None
    write_study_pages(results, a.to, plan)
    for item in a.subset:
        suite, _, path = item.partition("=")
        present = set(results.samples.model)
        models = load_suite(suite).models
        write_study_pages(select_models(results, [m for m in models if m in present]), Path(path), (suite, models))


if __name__ == "__main__":
    main()
