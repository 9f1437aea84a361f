"""Train whichever built-in zoo models are missing, a few processes at a time, resuming interrupted ones.

    python tools/train_zoo.py --out runs/zoo-train [--jobs 2] [--threads 1] [--device cpu]
    python tools/build_zoo.py runs/zoo-train         # then copy what landed into questbench/zoo

The zoo is ten seeds (0-9) of each attention kind in ZOO_KINDS, all with the built-in recipe (questbench.models.train).
A model counts as present when questbench/zoo or --out holds its safetensors. Each model trains in its own
``python -m questbench train --resume`` process, so a killed script restarted with the same arguments continues
every unfinished model from its last finished epoch (its ``<name>.train-state.pt``) to the same weights.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ZOO = Path(__file__).resolve().parents[1] / "questbench" / "zoo"
ZOO_KINDS = ("standard", "quest", "qnorm", "qknorm_hs")
SEEDS = range(10)


def zoo_name(kind: str, seed: int) -> str:
    return f"fmnist-vit-{kind.replace('_', '')}-s{seed}"


def missing(out: Path, seeds=SEEDS) -> list[tuple[str, int]]:
    """Standard and QUEST of every seed first (the study's primary pair), then the ablation kinds."""
    order = [(kind, seed) for kinds in (ZOO_KINDS[:2], ZOO_KINDS[2:]) for seed in seeds for kind in kinds]
    return [(kind, seed) for kind, seed in order
            if not (ZOO / f"{zoo_name(kind, seed)}.safetensors").exists()
            and not (out / f"{zoo_name(kind, seed)}.safetensors").exists()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/zoo-train"))
    ap.add_argument("--jobs", type=int, default=2, help="models trained at the same time")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per training process")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seeds", default=f"{SEEDS.start}-{SEEDS.stop - 1}",
                    help="seed range to train, e.g. 5-9 (default: the whole zoo)")
    args = ap.parse_args()
    lo, _, hi = args.seeds.partition("-")
    todo = missing(args.out, range(int(lo), int(hi or lo) + 1))
    print(f"{len(todo)} zoo models to train: {', '.join(zoo_name(k, s) for k, s in todo) or 'none'}", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    running: list[tuple[str, subprocess.Popen, float]] = []
    failed = []
    while todo or running:
        while todo and len(running) < args.jobs:
            kind, seed = todo.pop(0)
            cmd = [sys.executable, "-m", "questbench", "train", "--attention", kind, "--seed", str(seed),
                   "--out", str(args.out), "--device", args.device, "--resume", "--quiet"]
            running.append((zoo_name(kind, seed), subprocess.Popen(cmd, env=env), time.perf_counter()))
        time.sleep(1.0)
        for item in list(running):
            name, proc, t0 = item
            if proc.poll() is not None:
                running.remove(item)
                print(f"{name}: exit {proc.returncode} after {time.perf_counter() - t0:.0f} s", flush=True)
                if proc.returncode:
                    failed.append(name)
    if failed:
        sys.exit(f"failed: {', '.join(failed)} (run again to resume them)")


if __name__ == "__main__":
    main()
