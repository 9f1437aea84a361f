"""Scaling of `questbench run` under torchrun: the same suite with 1 rank and with N ranks (default 2), each in
a fresh folder, rounds alternating; prints the walls, the speed-up and the efficiency T1 / (N * TN), and checks
that both leaderboards are byte-identical csv.

On a CPU each rank has one thread (so 1 vs 2 ranks compares one core with two); on GPUs each rank has its own
GPU (``--device cuda``, needs N GPUs). The suite: the built-in Fashion-MNIST pair, clean on 2,000 images and a
PGD-10 sweep on 500 - sized for a few minutes on 2 cores (``--samples`` scales it).

    python bench/torchrun_scaling.py [--nproc 2] [--device cpu|cuda] [--rounds 2] [--samples 500]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUITE = """
name = "scaling"
models = ["fmnist-vit-standard-s0", "fmnist-vit-quest-s0"]
batch_size = 125
num_workers = 0
[data]
dataset = "fashion-mnist"
samples = 2000
[[attacks]]
attack = "pgd"
eps = ["1/255", "2/255", "4/255", "8/255"]
steps = 10
samples = {samples}
"""


def run(nproc: int, suite: Path, out: Path, device: str) -> float:
    bindir = Path(sys.executable).parent
    cmd = [str(bindir / "questbench"), "run", str(suite), "--out", str(out), "--device", device, "--quiet"]
    if nproc > 1:
        cmd = [str(bindir / "torchrun"), f"--nproc_per_node={nproc}", "--no-python", *cmd]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def csv(out: Path) -> str:
    from questbench.report.tidy import render_csv
    from questbench.store.results import load_results
    return render_csv(load_results(out))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--samples", type=int, default=500)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="qb-scaling-"))
    try:
        suite = tmp / "suite.toml"
        suite.write_text(SUITE.format(samples=args.samples))
        walls: dict[int, list[float]] = {1: [], args.nproc: []}
        for r in range(args.rounds):
            for n in walls:
                out = tmp / f"r{r}-n{n}"
                walls[n].append(run(n, suite, out, args.device))
        same = csv(tmp / "r0-n1") == csv(tmp / f"r0-n{args.nproc}")
        t1, tn = statistics.median(walls[1]), statistics.median(walls[args.nproc])
        print(f"device {args.device}, {os.cpu_count()} cores; walls (s): 1 rank {walls[1]}, "
              f"{args.nproc} ranks {walls[args.nproc]}")
        print(f"speed-up {t1 / tn:.2f}x, efficiency {t1 / (args.nproc * tn):.3f}; csv byte-identical: {same}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
