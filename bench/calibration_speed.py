"""The ECE bootstrap behind calibration's paired intervals: sorting every resample (the definition,
``expected_calibration_error`` on the resampled arrays) against reading each resample's bins off counts over one
sort per setting (``_SortedSettings``), on the same resamples, alternating rounds, medians.

At the study's size (one pair's corruption group: 75 settings x 200 images, 1,000 resamples in batches of 333)
this is what made a 40-model study page slow to render.

    python bench/calibration_speed.py [--settings 75] [--images 200] [--resamples 1000] [--rounds 5]
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    from questbench.kinds.calibration import _SortedSettings, expected_calibration_error

    ap = argparse.ArgumentParser()
    ap.add_argument("--settings", type=int, default=75)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=333)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--ties", type=float, default=0.2, help="share of images at confidence 1.0 (saturated)")
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    s, n = args.settings, args.images
    conf = rng.uniform(0.3, 1, (s, n))
    conf[:, : int(args.ties * n)] = 1.0
    correct = rng.uniform(size=(s, n)) < conf
    draws = rng.integers(0, n, (args.resamples, n))

    def by_sorting():
        return np.concatenate([expected_calibration_error(conf[:, b].transpose(1, 0, 2),
                                                          correct[:, b].transpose(1, 0, 2), 15)
                               for b in np.array_split(draws, max(1, args.resamples // args.batch))])

    def by_counts():
        sorted_once = _SortedSettings(conf, correct, 15)
        out = []
        for b in np.array_split(draws, max(1, args.resamples // args.batch)):
            counts = np.bincount((b + (np.arange(len(b)) * n)[:, None]).ravel(), minlength=len(b) * n)
            out.append(sorted_once.ece(counts.reshape(len(b), n)))
        return np.concatenate(out)

    assert np.allclose(by_sorting(), by_counts(), atol=1e-12, rtol=0)
    times = {"sort every resample": [], "counts over one sort": []}
    for _ in range(args.rounds):
        for name, fn in (("sort every resample", by_sorting), ("counts over one sort", by_counts)):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"{s} settings x {n} images, {args.resamples} resamples, {args.rounds} rounds; equal to 1e-12")
    for k, v in med.items():
        print(f"{k:>22}: {v:.3f} s (median; range {min(times[k]):.3f}-{max(times[k]):.3f})")
    print(f"ratio: {med['sort every resample'] / med['counts over one sort']:.2f}x")


if __name__ == "__main__":
    main()
