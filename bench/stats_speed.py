"""Paired statistics at fmnist-full scale: time and peak memory of questbench.compare on one standard/QUEST
pair, and the cluster bootstrap against the row-level bootstrap it replaced, measured in the same run.

fmnist-full per pair: 10,000 images x (95 corruption settings + 10 attack settings) = 1.05M rows per model.
The row-level bootstrap (an n_boot x n_rows index array) cannot run at that size (16 GB at 1M rows), so the
head-to-head is at 100,000 rows, where it still fits.

    python bench/stats_speed.py [--images 10000] [--settings 95]
"""
from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
import pandas as pd


def synthetic_results(n_img: int, n_corr: int, eps=(0, 1 / 255, 2 / 255, 4 / 255, 8 / 255)):
    from questbench.config.corruptions import ALL_CORRUPTIONS
    from questbench.store.results import Results

    rng = np.random.default_rng(0)
    ids = np.array([f"test/{i}" for i in range(n_img)])
    frames = []
    settings = [(c, s) for c in ALL_CORRUPTIONS for s in range(1, 6)][:n_corr]
    for model, attention, p in (("std", "standard", 0.80), ("quest", "quest", 0.81)):
        img_skill = rng.random(n_img)
        rows = []
        clean = img_skill < p + 0.1
        rows.append(pd.DataFrame({"evaluation": "clean", "setting": "clean", "corruption": None, "severity": np.nan,
                                  "eps": np.nan, "sample_id": ids, "correct": clean}))
        for c, s in settings:
            rows.append(pd.DataFrame({"evaluation": "corruption", "setting": f"{c}/{s}", "corruption": c,
                                      "severity": s, "eps": np.nan, "sample_id": ids,
                                      "correct": img_skill < p - 0.05 * s + 0.1 * rng.random(n_img)}))
        for attack in ("fgsm", "pgd"):
            for e in eps:
                rows.append(pd.DataFrame({"evaluation": "attack", "setting": f"{attack}/Linf/eps={e:.6g}",
                                          "attack": attack, "norm": "Linf", "eps": e, "sweep": ("fgsm", "pgd").index(attack),
                                          "sample_id": ids, "correct": img_skill < p - 40 * e,
                                          "clean_correct": clean}))
        df = pd.concat(rows, ignore_index=True)
        df["model"], df["attention"], df["pair"] = model, attention, "std" if model == "quest" else "quest"
        frames.append(df)
    samples = pd.concat(frames, ignore_index=True)
    return Results(samples=samples, jobs=pd.DataFrame(), diagnostics=pd.DataFrame(), provenance={})


def row_bootstrap(a, b, n_boot, seed=0):
    """The replaced implementation: rows as if independent, an (n_boot, n_rows) index array."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_boot, a.size))
    return np.percentile((b[idx] - a[idx]).mean(axis=1) * 100, [2.5, 97.5])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--settings", type=int, default=95)
    args = ap.parse_args()
    from questbench.stats.metrics import cluster_bootstrap, per_image_sums
    from questbench.report.compare import compare

    # head to head at 100,000 rows (1,000 images x 100 settings), 1,000 resamples each
    rng = np.random.default_rng(1)
    ids = np.repeat(np.arange(1000), 100)
    a = (rng.random(ids.size) < 0.7).astype(float)
    b = (rng.random(ids.size) < 0.72).astype(float)
    for name, fn in (("row bootstrap (old)", lambda: row_bootstrap(a, b, 1000)),
                     ("cluster bootstrap (new)", lambda: cluster_bootstrap(*per_image_sums(ids, a, b), n_boot=1000))):
        tracemalloc.start()
        t0 = time.perf_counter()
        fn()
        wall = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        print(f"{name:26s} 100,000 rows: {wall:7.2f} s, peak {peak:8.1f} MiB")
        if name.startswith("row"):
            base_wall, base_peak = wall, peak
    print(f"ratio old/new: time {base_wall / wall:.1f}x, memory {base_peak / peak:.0f}x")

    res = synthetic_results(args.images, args.settings)
    rows_per_model = len(res.samples) // 2
    tracemalloc.start()
    t0 = time.perf_counter()
    df = compare(res, "std", "quest")
    wall = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    print(f"compare(): {args.images} images, {rows_per_model:,} rows per model, {len(df)} result rows: "
          f"{wall:.1f} s, peak {peak:.0f} MiB")


if __name__ == "__main__":
    main()
