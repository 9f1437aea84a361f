"""Has the study's primary attack converged? Robust accuracy under the attack as the suite runs it and under the
same attack with both its iterations and its restarts doubled, per model and eps, on the same images (issue 35:
a primary endpoint's attack must move by under 0.5 pp on every model when doubled).

- ``apgd-ce``: the reference pyautoattack APGD-CE as the study's suites run it (version "custom", 100 iterations x
  1 restart, as AutoAttack's standard version runs it) against 200 iterations x 2 restarts, same seed;
- ``pgd``: questbench's PGD (step eps/4, random start) at S steps x R restarts against 2S x 2R.

Prints one line per (model, eps) as soon as it has it, then the largest change; the figures go to
bench/RESULTS.md with the machine they came from.

    python bench/attack_convergence.py [--attack apgd-ce] [--eps 4/255,8/255] [--samples 1000]
        [--models fmnist-vit-standard-s0,fmnist-vit-quest-s0 | fashion-mnist] [--steps 100 --restarts 1]
        [--threads 2] [--device cuda]

``--models fashion-mnist`` is every zoo model of that dataset (the study's "every model").
"""
from __future__ import annotations

import argparse
import platform
import time
from fractions import Fraction

import numpy as np
import torch

import questbench
from questbench.config.settings import AttackConfig
from questbench.evaluators.attacks import evaluate_attack


def apgd_robust(model, x: torch.Tensor, y: torch.Tensor, eps: float, n_iter: int, n_restarts: int,
                seed: int, device: str) -> float:
    from pyautoattack import AutoAttack

    aa = AutoAttack(model, norm="Linf", eps=eps, version="custom", attacks=["apgd-ce"], seed=seed, device=device)
    aa.apgd.n_iter, aa.apgd.n_restarts = n_iter, n_restarts
    x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=len(x))
    with torch.no_grad():
        clean = model(x).argmax(1) == y
        adv = model(x_adv).argmax(1) == y
    return 100 * float((clean & adv).float().mean())


def pgd_robust(model, ds, eps: float, steps: int, restarts: int, seed: int, device: str) -> float:
    cfg = AttackConfig(attack="pgd", eps=eps, norm="Linf", steps=steps, step_size=eps / 4, restarts=restarts,
                       random_start=True, loss="ce")
    records = evaluate_attack(model, ds, cfg, seed=seed, batch_size=500, device=device).records
    return 100 * float(np.mean([r["correct"] for r in records]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--attack", choices=["apgd-ce", "pgd"], default="apgd-ce")
    ap.add_argument("--eps", default="4/255,8/255")
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--models", default="fmnist-vit-standard-s0,fmnist-vit-quest-s0")
    ap.add_argument("--steps", type=int, default=None, help="iterations (apgd-ce: 100, pgd: 50)")
    ap.add_argument("--restarts", type=int, default=None, help="restarts (apgd-ce: 1, pgd: 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    steps = a.steps or (100 if a.attack == "apgd-ce" else 50)
    restarts = a.restarts or (1 if a.attack == "apgd-ce" else 3)
    ds = questbench.load_dataset("fashion-mnist")
    ids = np.random.default_rng(a.seed).choice(len(ds), a.samples, replace=False)
    ds = ds.subset(sorted(int(i) for i in ids))
    x = torch.stack([ds[i][0] for i in range(len(ds))]).to(a.device)
    y = torch.tensor([int(ds[i][1]) for i in range(len(ds))]).to(a.device)
    names = a.models.split(",")
    if a.models == "fashion-mnist":
        names = [m.name for m in questbench.list_models() if m.dataset == a.models]
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {a.threads} threads, {a.device}, "
          f"{a.samples} Fashion-MNIST test images (seed {a.seed}), {a.attack} {steps} x {restarts} vs "
          f"{2 * steps} x {2 * restarts}", flush=True)
    print("model | eps | robust@S,R (%) | robust@2S,2R (%) | change (pp) | s", flush=True)
    worst = 0.0
    for name in names:
        model = questbench.load_model(name).eval().to(a.device)
        for text in a.eps.split(","):
            eps = float(Fraction(text))
            t0 = time.perf_counter()
            if a.attack == "apgd-ce":
                base = apgd_robust(model, x, y, eps, steps, restarts, a.seed, a.device)
                long = apgd_robust(model, x, y, eps, 2 * steps, 2 * restarts, a.seed, a.device)
            else:
                base = pgd_robust(model, ds, eps, steps, restarts, a.seed, a.device)
                long = pgd_robust(model, ds, eps, 2 * steps, 2 * restarts, a.seed, a.device)
            worst = max(worst, abs(long - base))
            print(f"{name} | {text} | {base:.2f} | {long:.2f} | {long - base:+.2f} | "
                  f"{time.perf_counter() - t0:.0f}", flush=True)
    print(f"# largest change: {worst:.2f} pp ({'under' if worst < 0.5 else 'NOT under'} 0.5 pp)", flush=True)


if __name__ == "__main__":
    main()
