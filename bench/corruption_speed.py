"""Corruption generation throughput: questbench's DataLoader-worker grid vs imagecorruptions.corrupt in a plain
loop on the same cores, measured in one run; and the cost of a full 15 x 5 sweep per image at 32^2 and 224^2.

    python bench/corruption_speed.py [--images 64] [--workers 2] [--size 28]

--size 28 is Fashion-MNIST (corrupted at 32x32 per the small-image policy); --size 224 is ImageNet-sized RGB.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from questbench.data.arrays import ArrayDataset
from questbench.evaluators.corruptions import (CorruptionGrid, CorruptionSetting, OnTheFly, _grid_loader,
                                               corrupt_image, corruption_seed, prepare_image)
from questbench.metrics import COMMON_CORRUPTIONS


def plain_loop(images, settings):
    from imagecorruptions import corrupt
    for st in settings:
        for i, img in enumerate(images):
            np.random.seed(i)
            corrupt(prepare_image(img), corruption_name=st.corruption, severity=st.severity)


def grid_run(ds, settings, workers, batch):
    grid = CorruptionGrid(settings, len(ds), ds.labels, OnTheFly(ds, 0, "native"))
    n = 0
    for x, *_ in _grid_loader(grid, batch, workers):
        n += len(x)
    return n


def sweep_cost(size: int, reps: int) -> float:
    rng = np.random.default_rng(0)
    img = (rng.random((size, size, 3)) * 255).astype(np.uint8)
    for c in COMMON_CORRUPTIONS:  # warm-up (numba compiles glass_blur once per process)
        corrupt_image(img, c, 1, 0)
    t = time.perf_counter()
    for r in range(reps):
        for c in COMMON_CORRUPTIONS:
            for s in range(1, 6):
                corrupt_image(img, c, s, corruption_seed(0, str(r), c, s))
    return (time.perf_counter() - t) / reps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=200)  # the default suite: 200 images per setting
    ap.add_argument("--reps-224", type=int, default=1)
    ap.add_argument("--size", type=int, default=28)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    shape = (args.images, args.size, args.size) + (() if args.size < 32 else (3,))
    images = (rng.random(shape) * 255).astype(np.uint8)
    ds = ArrayDataset(images, np.zeros(args.images, np.int64), "bench", "synthetic")
    settings = [CorruptionSetting(c, s) for c in COMMON_CORRUPTIONS for s in (1, 3, 5)]
    grid_run(ds.subset(range(4)), settings[:3], args.workers, args.batch)  # warm the worker start-up path
    plain_loop(images[:1], settings)  # and the plain loop's one-off costs (numba compiles glass_blur)
    t = time.perf_counter()
    plain_loop(images, settings)
    t_plain = time.perf_counter() - t
    t = time.perf_counter()
    n = grid_run(ds, settings, args.workers, args.batch)
    t_grid = time.perf_counter() - t
    total = len(settings) * args.images
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {args.workers} workers; "
          f"{total} corrupted {max(32, args.size)}x{max(32, args.size)} images (15 corruptions x severities 1,3,5 x "
          f"{args.images})")
    print(f"plain loop : {total / t_plain:8.1f} img/s")
    print(f"grid       : {n / t_grid:8.1f} img/s   ratio {t_plain / t_grid:.2f}x")
    c32 = sweep_cost(32, 5)
    c224 = sweep_cost(224, args.reps_224)
    print(f"full 15x5 sweep per image: {c32 * 1000:.0f} ms at 32x32, {c224:.1f} s at 224x224 (one process)")


if __name__ == "__main__":
    main()
