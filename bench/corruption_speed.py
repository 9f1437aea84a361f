"""Corruption generation throughput: questbench's DataLoader-worker grid vs imagecorruptions.corrupt in a plain
loop on the same cores, measured in one run; and the cost of a full 15 x 5 sweep per image at 32^2 and 224^2.

    python bench/corruption_speed.py [--images 64] [--workers 2] [--size 28] [--rounds 3]
    python bench/corruption_speed.py --engines [--size 32|224] [--images N] [--device cpu|cuda]

--size 28 is Fashion-MNIST (corrupted at 32x32 per the small-image policy); --size 224 is ImageNet-sized RGB.
The two sides alternate for --rounds rounds (these machines are noisy); the ratio reported is the median of the
per-round ratios. CPU seconds per image are printed for both sides, so a ratio below 2.0x on 2 cores can be
read as either lost parallelism (cpu/wall) or extra work per image.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import time

import numpy as np
import torch

from questbench.data.arrays import ArrayDataset
from questbench.evaluators.corruption_grid import CorruptionGrid, OnTheFly, _grid_loader
from questbench.config.settings import CorruptionSetting
from questbench.evaluators.corruption_reference import corrupt_image, corruption_seed, prepare_image
from questbench.config.corruptions import COMMON_CORRUPTIONS


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


def _cpu_seconds(who) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def timed(fn, *args):
    """(wall s, this process's cpu s, finished children's cpu s): DataLoader workers are reaped when the loop
    ends, so their CPU shows up under RUSAGE_CHILDREN."""
    w, me, kids = time.perf_counter(), _cpu_seconds(resource.RUSAGE_SELF), _cpu_seconds(resource.RUSAGE_CHILDREN)
    fn(*args)
    return (time.perf_counter() - w, _cpu_seconds(resource.RUSAGE_SELF) - me,
            _cpu_seconds(resource.RUSAGE_CHILDREN) - kids)


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


def engine_comparison(size: int, n: int, workers: int, device: str, rounds: int) -> None:
    """The torch engine (batched, in this process, ``device``) against imagecorruptions (the grid, ``workers``
    DataLoader workers) on the same colour images: per common corruption (all five severities) and for the
    whole 15 x 5 sweep; rounds alternate and the medians are reported."""
    from questbench.data.photos import colour_crops
    from questbench.evaluators.torch_corruptions import corrupt_batch, generators

    images = colour_crops(n, size)
    ds = ArrayDataset(images, np.zeros(n, np.int64), "bench", "skimage photos")
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).to(device)

    def torch_run(name):
        for sev in range(1, 6):
            seeds = [corruption_seed(0, str(i), name, sev) for i in range(n)]
            corrupt_batch(x, name, sev, generators(seeds, device), "imagenet-c")
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def ref_run(name):
        grid_run(ds, [CorruptionSetting(name, s) for s in range(1, 6)], workers, n)

    for name in COMMON_CORRUPTIONS:  # warm both (numba, OpenCV, frost pictures, kernels)
        torch_run(name)
    ref_run("glass_blur")
    times: dict[str, dict[str, list[float]]] = {c: {"torch": [], "ref": []} for c in COMMON_CORRUPTIONS}
    for _ in range(rounds):
        for name in COMMON_CORRUPTIONS:
            for side, fn in (("torch", torch_run), ("ref", ref_run)):
                t = time.perf_counter()
                fn(name)
                times[name][side].append(time.perf_counter() - t)
    name_dev = torch.cuda.get_device_name() if device.startswith("cuda") else \
        f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    print(f"{n} colour images of {size} px; torch engine on {name_dev}; imagecorruptions in {workers} workers; "
          f"{rounds} round(s), medians; images/s count corrupted images (5 severities each)")
    print("| corruption | torch img/s | imagecorruptions img/s | ratio |")
    print("|---|---|---|---|")
    tot = {"torch": 0.0, "ref": 0.0}
    for name in COMMON_CORRUPTIONS:
        med = {k: statistics.median(v) for k, v in times[name].items()}
        tot = {k: tot[k] + med[k] for k in tot}
        print(f"| {name} | {5 * n / med['torch']:.0f} | {5 * n / med['ref']:.0f} | {med['ref'] / med['torch']:.1f}x |")
    print(f"| **whole 15 x 5 sweep** | {75 * n / tot['torch']:.0f} | {75 * n / tot['ref']:.0f} | "
          f"**{tot['ref'] / tot['torch']:.1f}x** |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--engines", action="store_true", help="torch engine vs imagecorruptions")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=200)  # the default suite: 200 images per setting
    ap.add_argument("--reps-224", type=int, default=1)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if args.engines:
        engine_comparison(max(32, args.size), args.images, args.workers, args.device, args.rounds)
        return
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    shape = (args.images, args.size, args.size) + (() if args.size < 32 else (3,))
    images = (rng.random(shape) * 255).astype(np.uint8)
    ds = ArrayDataset(images, np.zeros(args.images, np.int64), "bench", "synthetic")
    settings = [CorruptionSetting(c, s) for c in COMMON_CORRUPTIONS for s in (1, 3, 5)]
    grid_run(ds.subset(range(4)), settings[:3], args.workers, args.batch)  # warm the worker start-up path
    plain_loop(images[:1], settings)  # and the plain loop's one-off costs (numba compiles glass_blur)
    total = len(settings) * args.images
    side = max(32, args.size)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {args.workers} workers; batch {args.batch}; "
          f"{total} corrupted {side}x{side} images per side per round (15 corruptions x severities 1,3,5 x "
          f"{args.images})")
    ratios = []
    for r in range(args.rounds):
        p_wall, p_cpu, _ = timed(plain_loop, images, settings)
        g_wall, g_main, g_workers = timed(grid_run, ds, settings, args.workers, args.batch)
        ratios.append(p_wall / g_wall)
        print(f"round {r + 1}: plain {total / p_wall:7.1f} img/s ({p_cpu / total * 1e3:.2f} ms cpu/img, "
              f"cpu/wall {p_cpu / p_wall:.2f}) | grid {total / g_wall:7.1f} img/s (workers "
              f"{g_workers / total * 1e3:.2f} + main {g_main / total * 1e3:.2f} ms cpu/img, "
              f"cpu/wall {(g_workers + g_main) / g_wall:.2f}) | ratio {ratios[-1]:.2f}x")
    print(f"grid vs plain loop: median {statistics.median(ratios):.2f}x over {args.rounds} rounds "
          f"(min {min(ratios):.2f}x, max {max(ratios):.2f}x)")
    if args.reps_224:  # --reps-224 0 skips the sweep cost
        c32, c224 = sweep_cost(32, 5), sweep_cost(224, args.reps_224)
        print(f"full 15x5 sweep per image: {c32 * 1000:.0f} ms at 32x32, {c224:.1f} s at 224x224 (one process)")


if __name__ == "__main__":
    main()
