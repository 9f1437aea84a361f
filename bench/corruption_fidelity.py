"""Fidelity of the torch corruption engine (ImageNet-C constants) to imagecorruptions, corruption x severity.

- deterministic corruptions: mean and worst absolute pixel difference (in 1/255 steps) on the same images;
- random corruptions: mean and std of the per-image PSNR to the clean image, engine vs reference, and their
  relative gaps (tolerance 5%);
- every corruption: the built-in QUEST model's error on Fashion-MNIST test images under both engines, averaged
  over the five severities (tolerance 2 pp).

Colour images: random crops of scikit-image's bundled photos (``--size`` px; ``questbench.data.photos``).

    python bench/corruption_fidelity.py [--images 64] [--size 32] [--model-images 1000] [--workers 2]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from questbench.data.photos import colour_crops
from questbench.evaluators.corruption_reference import corrupt_image, corruption_seed
from questbench.evaluators.corruptions import evaluate_corruptions
from questbench.evaluators.torch_corruptions import CORRUPTIONS, corrupt_batch, generators
from questbench.config.settings import CorruptionSetting

DETERMINISTIC = ("brightness", "contrast", "defocus_blur", "zoom_blur", "pixelate", "jpeg_compression",
                 "gaussian_blur", "saturate")


def psnr(a: np.ndarray, clean: np.ndarray) -> np.ndarray:
    mse = ((a.astype(np.float64) - clean.astype(np.float64)) ** 2).mean((1, 2, 3))
    return 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-12))


def both(images: np.ndarray, name: str, severity: int, suite_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(engine, reference) corrupted uint8 NHWC, each image seeded as the runner seeds it."""
    seeds = [corruption_seed(suite_seed, str(i), name, severity) for i in range(len(images))]
    ref = np.stack([corrupt_image(im, name, severity, s) for im, s in zip(images, seeds)])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    ours = corrupt_batch(x, name, severity, generators(seeds, "cpu"), "imagenet-c")
    return torch.round(ours * 255).to(torch.uint8).permute(0, 2, 3, 1).numpy(), ref


def model_errors(n: int, workers: int) -> dict[str, dict[str, float]]:
    """{engine: {corruption: error % averaged over severities}} for the built-in QUEST model."""
    import questbench
    model = questbench.load_model("fmnist-vit-quest-s0")
    ds = questbench.load_dataset("fashion-mnist", "test").subset(range(n))
    settings = [CorruptionSetting(c, s) for c in CORRUPTIONS for s in range(1, 6)]
    out: dict[str, dict[str, float]] = {}
    for engine in ("imagecorruptions", "torch"):
        errs: dict[str, list[float]] = {}
        t = time.perf_counter()
        for st, _, records in evaluate_corruptions({"m": model}, ds, settings, 0, "native", engine=engine,
                                                   params="imagenet-c", batch_size=250, num_workers=workers):
            errs.setdefault(st.corruption, []).append(100 * (1 - np.mean([r["correct"] for r in records])))
        print(f"model error sweep, {engine}: {time.perf_counter() - t:.1f} s for {n} images x {len(settings)} settings")
        out[engine] = {c: float(np.mean(v)) for c, v in errs.items()}
    return out


def _gap(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Relative gaps (%) of a's mean and std to b's."""
    return ((a.mean() - b.mean()) / b.mean() * 100, (a.std() - b.std()) / b.std() * 100 if b.std() > 0 else 0.0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--model-images", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    images = colour_crops(args.images, args.size)
    print(f"{args.images} colour crops of {args.size} px; ImageNet-C constants\n")
    print("| corruption | severity | measure | engine | reference | gap | reference, other seeds: gap |")
    print("|---|---|---|---|---|---|---|")
    misses = []
    for name in CORRUPTIONS:
        for sev in range(1, 6):
            ours, ref = both(images, name, sev)
            if name in DETERMINISTIC:
                diff = np.abs(ours.astype(int) - ref.astype(int))
                mae, worst = diff.mean(), diff.max()
                print(f"| {name} | {sev} | MAE / worst (1/255) | {mae:.3f} | worst {worst} | | |")
                if mae > 1:
                    misses.append(f"{name} {sev}: MAE {mae:.3f}")
                continue
            p_o, p_r = psnr(ours, images), psnr(ref, images)
            p_r2 = psnr(both(images, name, sev, suite_seed=1)[1], images)  # the sampling noise of these figures
            keep = p_o < 100  # spatter leaves an image unchanged where the reference divides 0 by 0 (NaN)
            if not keep.all():
                print(f"| {name} | {sev} | images left unchanged by the engine, left out | {int((~keep).sum())} "
                      f"| | | |")
                p_o, p_r = p_o[keep], p_r[keep]
            gm, gs = _gap(p_o, p_r)
            nm, ns = _gap(p_r2, p_r)
            print(f"| {name} | {sev} | PSNR mean (std) dB | {p_o.mean():.2f} ({p_o.std():.2f}) | "
                  f"{p_r.mean():.2f} ({p_r.std():.2f}) | {gm:+.1f}% ({gs:+.1f}%) | {nm:+.1f}% ({ns:+.1f}%) |")
            if abs(gm) > 5 or abs(gs) > 5:
                misses.append(f"{name} {sev}: PSNR mean {gm:+.1f}%, std {gs:+.1f}%")
    if args.model_images:
        errs = model_errors(args.model_images, args.workers)
        print("\n| corruption | error, torch engine | error, imagecorruptions | gap (pp) |")
        print("|---|---|---|---|")
        for c in CORRUPTIONS:
            gap = errs["torch"][c] - errs["imagecorruptions"][c]
            print(f"| {c} | {errs['torch'][c]:.2f} | {errs['imagecorruptions'][c]:.2f} | {gap:+.2f} |")
            if abs(gap) > 2:
                misses.append(f"{c}: model error gap {gap:+.2f} pp")
    print("\nmisses: " + ("; ".join(misses) if misses else "none"))


if __name__ == "__main__":
    main()
