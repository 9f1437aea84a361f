"""Throughput of each attention kind relative to standard attention, measured interleaved in one run.

CPU (default): ViT-Tiny (192 wide, 12 blocks, 3 heads), 32x32 images, patch 4 (64 tokens), batch 64, fp32
training step (forward + backward + AdamW). GPU (--device cuda): ViT-S/16 at 224, batch 256, bf16 autocast
training step. Rounds alternate the kinds so machine noise hits all of them alike; the ratio is the median
step time of standard divided by the median step time of the kind (> 1 means faster than standard).

``--compiled-norm`` adds each normalized kind with its row normalization compiled into one kernel
(``questbench.models.attention.compile_normalization``, what a CUDA run with Triton uses automatically) as a kind
of its own, e.g. ``quest+compiled``. ``--inference`` times a forward pass under ``torch.inference_mode`` instead of
a training step (same models, same batch).

    python bench/attention_speed.py [--device cpu|cuda] [--rounds 7] [--steps 5] [--threads 2] [--compiled-norm]
                                    [--inference]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import timm
import torch
import torch.nn.functional as F

import questbench  # noqa: F401
from questbench.models.attention import ATTENTION_KINDS, set_attention


def build(kind: str, device: str):
    if kind.endswith("+compiled"):
        from questbench.models.attention import compile_normalization
        m, shape = build(kind.removesuffix("+compiled"), device)
        compile_normalization(m)
        return m, shape
    if device == "cpu":
        m = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, num_classes=10)
        shape = (64, 3, 32, 32)
    else:
        m = timm.create_model("vit_small_patch16_224", num_classes=1000)
        shape = (256, 3, 224, 224)
    set_attention(m, kind)
    return m.to(device), shape


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kinds", default=",".join(ATTENTION_KINDS))
    ap.add_argument("--compiled-norm", action="store_true")
    ap.add_argument("--inference", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = args.device
    kinds = args.kinds.split(",")
    if args.compiled_norm:
        kinds += [f"{k}+compiled" for k in kinds if ATTENTION_KINDS[k].normalize_rows]
    models, opts = {}, {}
    torch.manual_seed(0)
    for k in kinds:
        models[k], shape = build(k, dev)
        opts[k] = torch.optim.AdamW(models[k].parameters(), lr=1e-4)
    x = torch.rand(shape, device=dev)
    y = torch.randint(0, 10, (shape[0],), device=dev)
    use_bf16 = dev.startswith("cuda")

    def step(k):
        if args.inference:
            with torch.inference_mode(), torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_bf16):
                models[k](x)
            return
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_bf16):
            loss = F.cross_entropy(models[k](x), y)
        opts[k].zero_grad(set_to_none=True)
        loss.backward()
        opts[k].step()

    def sync():
        if use_bf16:
            torch.cuda.synchronize()

    for k in kinds:  # warm-up
        step(k)
        step(k)
    times = {k: [] for k in kinds}
    for r in range(args.rounds):
        order = kinds if r % 2 == 0 else kinds[::-1]
        for k in order:
            sync()
            t = time.perf_counter()
            for _ in range(args.steps):
                step(k)
            sync()
            times[k].append((time.perf_counter() - t) / args.steps)
    base = statistics.median(times["standard"])
    name = torch.cuda.get_device_name() if use_bf16 else f"{platform.machine()} CPU, {args.threads} threads"
    what = "inference (forward)" if args.inference else "training step"
    print(f"device: {name}; torch {torch.__version__}; timm {timm.__version__}; {what}, batch {shape[0]}")
    print(f"{'kind':16s} {'ms/step':>9s} {'img/s':>8s} {'ratio vs standard':>18s}")
    for k in kinds:
        med = statistics.median(times[k])
        print(f"{k:16s} {1000 * med:9.1f} {shape[0] / med:8.0f} {base / med:18.3f}")


if __name__ == "__main__":
    main()
