"""Issue 40's figures from one script, each printed as soon as it is measured:

1. attention: QUEST (and the other normalized kinds named) against standard attention, eager and with the fused
   (compiled) normalization, in a training step and in inference (``bench/attention_speed.py``);
2. attacks: PGD-10 and the patch attack against a bare forward+backward loop of the same model work, and (on a GPU)
   bf16 against fp32 (``bench/attack_speed.py``; a CPU without bf16 units emulates it, so the CPU run skips it);
3. the default run's wall time (``questbench run`` into a fresh folder, as a user starts it).

Every ratio is against a baseline measured in the same run. On the CPU: ViT-Tiny at 32 px, batch 64, and the
built-in Fashion-MNIST QUEST model; with ``--device cuda``: ViT-S/16 at 224, batch 256, bf16, and ViT-S/16 for the
attacks. Each step has its own time limit, so a slow one cannot take the others' time.

    python bench/speed_report.py [--device cpu|cuda] [--kinds standard,quest] [--skip-default-run] [--default-out DIR]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def step(title: str, cmd: list[str], limit_s: int) -> None:
    print(f"## {title}\n$ {' '.join(cmd)}", flush=True)
    t = time.perf_counter()
    try:
        subprocess.run(cmd, cwd=ROOT, timeout=limit_s, check=False)
    except subprocess.TimeoutExpired:
        print(f"(stopped at its {limit_s} s limit)")
    print(f"({time.perf_counter() - t:.0f} s)\n", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--kinds", default="standard,quest")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-default-run", action="store_true")
    ap.add_argument("--default-out", help="keep the default run's results here (a fresh folder; default: a temporary one)")
    args = ap.parse_args()
    py, dev = sys.executable, args.device
    gpu = dev.startswith("cuda")
    attention = [py, "bench/attention_speed.py", "--device", dev, "--kinds", args.kinds, "--rounds", str(args.rounds),
                 "--threads", str(args.threads), "--compiled-norm"]
    step("1a. attention, training step (eager and fused normalization)", attention, 900)
    step("1b. attention, inference", attention + ["--inference"], 600)
    attack = [py, "bench/attack_speed.py", "--device", dev, "--patch", "--rounds", "3"]
    attack += ["--vit-s", "--images", "512", "--batch", "256"] if gpu else ["--images", "500", "--batch", "250",
                                                                           "--no-bf16"]
    step("2. attacks against a bare forward+backward loop; bf16 against fp32", attack, 900)
    if args.skip_default_run:
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = args.default_out or os.path.join(tmp, "default")
        if os.path.exists(out):
            sys.exit(f"{out} exists: the default run's wall time is measured on a fresh folder")
        cmd = [str(Path(py).with_name("questbench")), "run", "--quiet", "--out", out]
        if gpu:
            cmd += ["--device", dev]
        print(f"## 3. the default run, wall time\n$ {' '.join(cmd)}", flush=True)
        t = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, timeout=1800, capture_output=True, text=True)
        wall = time.perf_counter() - t
        print(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr.strip()[-2000:])
        print(f"default run wall: {wall:.1f} s (exit {done.returncode})", flush=True)

if __name__ == "__main__":
    main()
