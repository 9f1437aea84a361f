"""Start-up time of the command line: `questbench --help`, `questbench models`, `questbench suites`, and a bare
`python -c "import questbench"`, each run N times in fresh processes; with ``--results DIR`` (a finished run)
also the report commands, which import no torch: `leaderboard DIR --format csv`, `leaderboard DIR --output
FILE.md` (with its plots), `compare DIR A B` and `export DIR`. Prints the median wall time and, as the baseline
measured in the same run, a bare `python -c pass` and `python -c "import torch"`.

    python bench/startup_speed.py [--runs 7] [--results runs/default]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time


def median_wall(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--results", help="a finished results folder for the report commands")
    args = ap.parse_args()
    exe = shutil.which("questbench") or sys.exit("questbench is not installed in this environment")
    cases = [("python -c pass (baseline)", [sys.executable, "-c", "pass"]),
             ("python -c 'import questbench'", [sys.executable, "-c", "import questbench"]),
             ("questbench --help", [exe, "--help"]),
             ("questbench models", [exe, "models"]),
             ("questbench suites", [exe, "suites"]),
             ("python -c 'import torch'", [sys.executable, "-c", "import torch"])]
    if args.results:
        import json
        import tempfile
        from pathlib import Path
        models = sorted(json.loads((Path(args.results) / "provenance.json").read_text())["models"])[:2]
        tmp = tempfile.mkdtemp()
        cases += [("questbench leaderboard --format csv", [exe, "leaderboard", args.results, "--format", "csv"]),
                  ("questbench leaderboard --output md", [exe, "leaderboard", args.results, "--output",
                                                          f"{tmp}/lb.md"]),
                  (f"questbench compare ({len(models)} models)", [exe, "compare", args.results, *models]),
                  ("questbench export", [exe, "export", args.results, "--out", f"{tmp}/rb"])]
    base = None
    for name, cmd in cases:
        t = median_wall(cmd, args.runs)
        base = base or t
        print(f"{name:32s} median {t:6.2f} s  ({t / base:5.1f}x the bare interpreter)")


if __name__ == "__main__":
    main()
