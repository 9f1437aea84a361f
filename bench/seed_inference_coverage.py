"""Coverage of the 95% seed-level interval and size of its test, against the crossed (pairs x images) bootstrap,
in simulated studies with a known answer (questbench.stats.simulate.pair_study): k pairs on 1,000 shared images,
pair effects N(2 pp, 1.5 pp), image-specific effects uniform within +-image_effect.

    python bench/seed_inference_coverage.py [--studies 1000] [--boot-studies 300]
"""
from __future__ import annotations

import argparse

import numpy as np

from questbench.stats.metrics import seed_level_inference, two_way_bootstrap
from questbench.stats.simulate import pair_study


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--studies", type=int, default=1000)
    ap.add_argument("--boot-studies", type=int, default=300)
    args = ap.parse_args()
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
