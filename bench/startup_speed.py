"""Start-up time of the command line: `questbench --help`, `questbench models`, `questbench suites`, and a bare
`python -c "import questbench"`, each run N times in fresh processes; prints the median wall time and, as the
baseline measured in the same run, a bare `python -c pass`.

    python bench/startup_speed.py [--runs 7]
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
    args = ap.parse_args()
    exe = shutil.which("questbench") or sys.exit("questbench is not installed in this environment")
    cases = [("python -c pass (baseline)", [sys.executable, "-c", "pass"]),
             ("python -c 'import questbench'", [sys.executable, "-c", "import questbench"]),
             ("questbench --help", [exe, "--help"]),
             ("questbench models", [exe, "models"]),
             ("questbench suites", [exe, "suites"])]
    base = None
    for name, cmd in cases:
        t = median_wall(cmd, args.runs)
        base = base or t
        print(f"{name:32s} median {t:6.2f} s  ({t / base:5.1f}x the bare interpreter)")


if __name__ == "__main__":
    main()
