"""PGD throughput against a bare forward+backward loop of the same model, and bf16 vs fp32 (accuracy and speed),
measured in one run.

The bare loop does exactly PGD's model work (``steps`` forward+backward passes per image w.r.t. the input, plus
one clean and one final forward), with none of the attack's bookkeeping; the ratio says what the attack
machinery costs. Default model: the built-in Fashion-MNIST QUEST ViT; ``--vit-s`` uses a random ViT-S/16 at
224 (GPU).

With ``--vit-s`` the labels are the random model's own predictions, so every image starts correctly classified
and each attack does its full work (random labels would leave AutoAttack nothing to attack). ``--autoattack N``
also times the reference AutoAttack (standard, L-inf) on N images.

``--patch`` also times the patch attack (one 1-token patch, cross-entropy, ``steps`` steps, 1 restart) against
a bare loop of its model work (``steps`` forward+backward passes and one final forward per image, plus the clean
and start forwards it makes). The attack reads attention statistics, so its forwards take the explicit attention
path; the bare loop runs the model as it is.

    python bench/attack_speed.py [--device cuda] [--images 512] [--steps 10] [--batch 256] [--vit-s]
                                 [--autoattack N] [--patch]
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
import torch.nn.functional as F

import questbench
from questbench.data.arrays import ArrayDataset
from questbench.evaluators.attacks import AttackConfig, evaluate_attack
from questbench.evaluators.common import PrecisionWrapper, precision_scope


def bare_loop(model, x_all, y_all, steps, batch, device, extra_forwards=0):
    for i in range(0, len(x_all), batch):
        x = x_all[i:i + batch].to(device)
        y = y_all[i:i + batch].to(device)
        with torch.no_grad():
            for _ in range(1 + extra_forwards):
                model(x)
        for _ in range(steps):
            x = x.detach().requires_grad_(True)
            g, = torch.autograd.grad(F.cross_entropy(model(x), y), x)
        with torch.no_grad():
            model(x)
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--eps", type=float, default=2 / 255)
    ap.add_argument("--vit-s", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--autoattack", type=int, default=0, help="also time reference AutoAttack on N images")
    ap.add_argument("--patch", action="store_true", help="also time the patch attack against its bare loop")
    ap.add_argument("--no-bf16", action="store_true", help="skip bf16 PGD (a CPU without bf16 units emulates it)")
    args = ap.parse_args()
    dev = args.device
    precision_scope(dev).__enter__()  # TF32 matmuls on a GPU, as a run's fp32 jobs get them
    if args.vit_s:
        from questbench.models.build import ModelSpec, build_model
        model = build_model(ModelSpec(arch="vit_small_patch16_224", attention="quest", num_classes=1000)).to(dev).eval()
        rng = np.random.default_rng(0)
        images = (rng.random((args.images, 224, 224, 3)) * 255).astype(np.uint8)
        ds = ArrayDataset(images, np.zeros(args.images, np.int64), "random", "random")
        with torch.no_grad():  # the model's own predictions as labels: every image starts correct
            own = [model(torch.stack([ds[i][0] for i in range(a, min(a + args.batch, len(ds)))]).to(dev)).argmax(1)
                   for a in range(0, len(ds), args.batch)]
        ds = ArrayDataset(images, torch.cat(own).cpu().numpy(), "random", "random")
    else:
        model = questbench.load_model("fmnist-vit-quest-s0", device=dev)
        ds = questbench.load_dataset("fashion-mnist", "test").subset(range(args.images))
    for p in model.parameters():
        p.requires_grad_(False)
    x_all = torch.stack([ds[i][0] for i in range(len(ds))])
    y_all = torch.tensor(ds.labels)
    cfg = AttackConfig("pgd", args.eps, steps=args.steps)
    warm = ds.subset(range(min(args.batch, len(ds))))  # first calls (allocator, kernels) outside the timings
    bare_loop(PrecisionWrapper(model, "fp32", dev), x_all[:len(warm)], y_all[:len(warm)], 1, args.batch, dev)
    precisions = ("fp32",) if args.no_bf16 else ("fp32", "bf16")
    for prec in precisions:
        evaluate_attack(model, warm, AttackConfig("pgd", args.eps, steps=1), batch_size=args.batch, device=dev,
                        precision=prec)
    times = {"bare": [], **{f"pgd {p}": [] for p in precisions}}
    acc = {}
    for _ in range(args.rounds):
        t = time.perf_counter()
        bare_loop(PrecisionWrapper(model, "fp32", dev), x_all, y_all, args.steps, args.batch, dev)
        times["bare"].append(time.perf_counter() - t)
        for prec in precisions:
            t = time.perf_counter()
            res = evaluate_attack(model, ds, cfg, batch_size=args.batch, device=dev, precision=prec)
            times[f"pgd {prec}"].append(time.perf_counter() - t)
            acc[prec] = 100 * np.mean([r["correct"] for r in res.records])
    med = {k: float(np.median(v)) for k, v in times.items()}
    name = torch.cuda.get_device_name() if dev.startswith("cuda") else f"{platform.machine()} CPU, " \
                                                                       f"{torch.get_num_threads()} threads"
    print(f"device: {name}; {args.images} images, PGD-{args.steps} L-inf eps={args.eps:.5f}, batch {args.batch}")
    for k, v in med.items():
        print(f"{k:9s} {args.images / v:9.1f} img/s")
    print(f"PGD fp32 / bare loop throughput: {med['bare'] / med['pgd fp32']:.3f}")
    if args.patch:
        from questbench.config.settings import PatchConfig
        from questbench.evaluators.patch import evaluate_patch
        pcfg = PatchConfig(patches=1, loss="ce", steps=args.steps)
        wrapped = PrecisionWrapper(model, "fp32", dev)
        evaluate_patch(model, warm, pcfg, batch_size=args.batch, device=dev)  # warm-up
        pt = {"bare": [], "patch": []}
        for _ in range(args.rounds):
            t = time.perf_counter()
            bare_loop(wrapped, x_all, y_all, args.steps, args.batch, dev, extra_forwards=4)
            pt["bare"].append(time.perf_counter() - t)
            t = time.perf_counter()
            evaluate_patch(model, ds, pcfg, batch_size=args.batch, device=dev)
            if dev.startswith("cuda"):
                torch.cuda.synchronize()
            pt["patch"].append(time.perf_counter() - t)
        pm = {k: float(np.median(v)) for k, v in pt.items()}
        print(f"patch attack ({args.steps} steps, 1 restart, ce) {args.images / pm['patch']:9.1f} img/s; "
              f"bare loop {args.images / pm['bare']:9.1f} img/s")
        print(f"patch / bare loop throughput: {pm['bare'] / pm['patch']:.3f}")
    if args.autoattack:
        sub = ds.subset(range(min(args.autoattack, len(ds))))
        aa = AttackConfig("autoattack", args.eps)
        t = time.perf_counter()
        res = evaluate_attack(model, sub, aa, batch_size=args.batch, device=dev)
        wall = time.perf_counter() - t
        print(f"AutoAttack (reference, standard) fp32 {len(sub) / wall:9.1f} img/s on {len(sub)} images, "
              f"robust accuracy {100 * np.mean([r['correct'] for r in res.records]):.2f}%")
    if args.no_bf16:
        return
    print(f"bf16 / fp32 PGD speed: {med['pgd fp32'] / med['pgd bf16']:.2f}x; robust accuracy fp32 {acc['fp32']:.2f}%, "
          f"bf16 {acc['bf16']:.2f}% (diff {acc['bf16'] - acc['fp32']:+.2f} pp)")


if __name__ == "__main__":
    main()
