"""Coverage of the 95% seed-level interval and size of its test, against the crossed (pairs x images) bootstrap,
in simulated studies with a known answer (questbench.stats.simulate.pair_study): k pairs on 1,000 shared images,
pair effects N(2 pp, 1.5 pp), image-specific effects uniform within +-image_effect.

    python bench/seed_inference_coverage.py [--studies 1000] [--boot-studies 300]
    python bench/seed_inference_coverage.py --discordant [--studies 1000]

``--discordant``: outcomes that disagree both ways at the rates the committed runs show
(questbench.stats.simulate.discordant_pair_study, simulate.DISCORDANCE), image effects as large as the
discordance allows, k = 5, 10, 20 pairs: the shipped interval beside the pairs-only t interval (the image term
deleted), which covers too little once the shared images carry a large part of the variance.
"""
from __future__ import annotations

import argparse

import numpy as np

from questbench.stats.metrics import seed_interval, seed_level_inference, two_way_bootstrap
from questbench.stats.simulate import DISCORDANCE, discordant_pair_study, pair_study


def discordant(studies: int) -> None:
    print("| setting (discordance) | k | shipped interval coverage | pairs-only t coverage |")
    print("|---|---|---|---|")
    for setting, d in DISCORDANCE.items():
        for k in (5, 10, 20):
            rng = np.random.default_rng(k)
            shipped = pairs_only = 0
            for _ in range(studies):
                x = discordant_pair_study(rng, k, 1000, 0.01, d)
                lo, hi, _, _ = seed_interval(x)
                shipped += lo <= 1.0 <= hi
                lo, hi, _, _ = seed_interval(x, images=False)
                pairs_only += lo <= 1.0 <= hi
            print(f"| {setting} ({100 * d:.1f}%) | {k} | {100 * shipped / studies:.1f}% | "
                  f"{100 * pairs_only / studies:.1f}% |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--studies", type=int, default=1000)
    ap.add_argument("--boot-studies", type=int, default=300)
    ap.add_argument("--discordant", action="store_true", help="two-way discordance at the committed runs' rates")
    args = ap.parse_args()
    if args.discordant:
        return discordant(args.studies)
    print("| image effect | k | t interval coverage | rejects a true zero | crossed bootstrap coverage |")
    print("|---|---|---|---|---|")
    for image_effect in (0.0, 0.05, 0.15):
        for k in (3, 5, 10):
            rng = np.random.default_rng(k)
            cov = rej = boot = 0
            for s in range(args.studies):
                x = pair_study(rng, k, 1000, 0.02, image_effect=image_effect)
                r = seed_level_inference(x)
                cov += r["ci_low"] <= 2 <= r["ci_high"]
                rej += seed_level_inference(pair_study(rng, k, 1000, 0.0, image_effect=image_effect))["p_value"] < .05
                if s < args.boot_studies:
                    b = two_way_bootstrap(x / 100, np.ones(x.shape[1]), n_boot=1000, seed=s)
                    boot += b["ci_low"] <= 2 <= b["ci_high"]
            print(f"| +-{image_effect:.2f} | {k} | {100 * cov / args.studies:.1f}% | {100 * rej / args.studies:.1f}% "
                  f"| {100 * boot / args.boot_studies:.1f}% |", flush=True)


if __name__ == "__main__":
    main()
