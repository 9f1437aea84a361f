"""Has the patch attack converged? One run with 2 x steps per setting gives robust accuracy at steps and at
2 x steps (the attack keeps the best iterate and its trajectories do not depend on the step count, so the
first-success step of each sample says when it would have been fooled; `tests/test_patch.py` checks that a
shorter run agrees). Restarts: a second run with 2 x restarts (and 2 x steps) beside it.

Prints, per model, loss and patch count: robust accuracy (%) at steps and 2 x steps, with restarts R and 2R,
and the changes in pp. The zoo models and the Fashion-MNIST test subset of the `attention-attacks` suite.

    python bench/patch_convergence.py [--steps 20] [--restarts 1] [--step-size 0.1] [--halve-every 0] [--samples 400]
                                      [--models fmnist-vit-standard-s0,fmnist-vit-quest-s0] [--patches 1,2,4]
                                      [--no-restart-run] [--threads 2]
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

import questbench
from questbench.evaluators.patch import evaluate_patch
from questbench.config.settings import PatchConfig


def robust(records, steps: int) -> float:
    return 100 * np.mean([r["clean_correct"] and (r["first_success_step"] is None or r["first_success_step"] > steps)
                          for r in records])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--restarts", type=int, default=1)
    ap.add_argument("--step-size", type=float, default=0.1)
    ap.add_argument("--halve-every", type=int, default=0, help="halve the step every n steps (0: fixed)")
    ap.add_argument("--samples", type=int, default=400)
    ap.add_argument("--models", default="fmnist-vit-standard-s0,fmnist-vit-quest-s0")
    ap.add_argument("--patches", default="1,2,4")
    ap.add_argument("--losses", default="ce,attention")
    ap.add_argument("--no-restart-run", action="store_true",
                    help="skip the 2 x restarts run (its column is then '-'): half the time, steps only")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ds = questbench.load_dataset("fashion-mnist")
    ids = np.random.default_rng(0).choice(len(ds), a.samples, replace=False)
    ds = ds.subset(sorted(int(i) for i in ids))
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {a.samples} images, "
          f"step size {a.step_size}" + (f", halved every {a.halve_every} steps" if a.halve_every else ""))
    print("model | loss | patches | robust@S,R | robust@2S,R | robust@2S,2R | 2S-S (pp) | 2R-R (pp) | s")
    for name in a.models.split(","):
        model = questbench.load_model(name)
        for loss in a.losses.split(","):
            for k in (int(x) for x in a.patches.split(",")):
                t0 = time.perf_counter()
                base = dict(patches=k, loss=loss, step_size=a.step_size, halve_every=a.halve_every)
                long = evaluate_patch(model, ds, PatchConfig(steps=2 * a.steps, restarts=a.restarts, **base),
                                      batch_size=200).records
                r_s, r_2s = robust(long, a.steps), robust(long, 2 * a.steps)
                restarts_cols = "- | -"
                if not a.no_restart_run:
                    more = evaluate_patch(model, ds, PatchConfig(steps=2 * a.steps, restarts=2 * a.restarts, **base),
                                          batch_size=200).records
                    r_2r = robust(more, 2 * a.steps)
                    restarts_cols = f"{r_2r:.2f} | {r_2r - r_2s:+.2f}"
                r_2r_text, change_text = restarts_cols.split(" | ")
                print(f"{name} | {loss} | {k} | {r_s:.2f} | {r_2s:.2f} | {r_2r_text} | {r_2s - r_s:+.2f} | "
                      f"{change_text} | {time.perf_counter() - t0:.0f}", flush=True)


if __name__ == "__main__":
    main()
