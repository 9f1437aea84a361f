"""Clean evaluation throughput through questbench's path (DataLoader workers decoding batches, pinned memory and
non-blocking copies on a GPU) against a bare loop of the same model over batches already on the device, in one
run, rounds alternating. The ratio (target >= 0.9) says what feeding the model costs.

Default: the built-in Fashion-MNIST QUEST ViT on the 10,000 test images. ``--vit-s``: a random ViT-S/16 at 224
on random uint8 images (what an ImageNet evaluation feeds, minus JPEG decoding).

    python bench/clean_speed.py [--device cuda] [--vit-s] [--images N] [--batch 256] [--workers 2] [--rounds 3]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch

import questbench
from questbench.data.arrays import ArrayDataset
from questbench.evaluators.clean import evaluate_clean
from questbench.evaluators.common import precision_scope


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.inference_mode()
def bare(model, batches, device: str) -> None:
    for x in batches:
        model(x).argmax(1).cpu()
    sync(device)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--vit-s", action="store_true")
    ap.add_argument("--images", type=int, default=0, help="default: 10,000 (F-MNIST) or 2,048 (ViT-S)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    dev = args.device
    precision_scope(dev).__enter__()  # TF32 matmuls on a GPU, as a run's fp32 jobs get them
    if args.vit_s:
        from questbench.models.build import ModelSpec, build_model
        n = args.images or 2048
        model = build_model(ModelSpec(arch="vit_small_patch16_224", attention="quest", num_classes=1000))
        rng = np.random.default_rng(0)
        ds = ArrayDataset((rng.random((n, 224, 224, 3)) * 255).astype(np.uint8), np.zeros(n, np.int64), "random",
                          "random")
    else:
        model = questbench.load_model("fmnist-vit-quest-s0")
        ds = questbench.load_dataset("fashion-mnist", "test")
        ds = ds.subset(range(args.images or len(ds)))
    model = model.to(dev).eval()
    on_device = [torch.stack([ds[i][0] for i in range(a, min(a + args.batch, len(ds)))]).to(dev)
                 for a in range(0, len(ds), args.batch)]
    bare(model, on_device[:2], dev)  # warm-up
    times: dict[str, list[float]] = {"bare": [], "questbench": []}
    for _ in range(args.rounds):
        t = time.perf_counter()
        bare(model, on_device, dev)
        times["bare"].append(time.perf_counter() - t)
        t = time.perf_counter()
        evaluate_clean(model, ds, args.batch, dev, num_workers=args.workers)
        sync(dev)
        times["questbench"].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    name = torch.cuda.get_device_name() if dev.startswith("cuda") else \
        f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; {len(ds)} images {tuple(ds[0][0].shape)}, batch {args.batch}, "
          f"{args.workers} workers, {args.rounds} rounds (medians)")
    for k, v in med.items():
        print(f"{k:11s} {len(ds) / v:10.1f} img/s")
    print(f"questbench / bare model throughput: {med['bare'] / med['questbench']:.3f}")


if __name__ == "__main__":
    main()
