"""GPU-hour estimate for `suites/paper-imagenet.toml` on one pair of ViT-S/16 checkpoints, from throughput
figures measured on an H100 (ViT-S/16 at 224, batch 256; issue #15) and the JPEG decoding rate measured here.

Cost model (per model; a pair costs twice, except decoding, which the pair shares: one corrupted batch serves
both models):
- ImageNet-C from disk: 15 corruptions x 5 severities x 50,000 = 3.75 M JPEG images, one forward each; bound
  by the slower of the GPU's inference and the host's decoding (`--cores` cores).
- AutoAttack standard on N images: only the clean-correct ones are attacked; APGD-CE (100 forward+backward each),
  then on the samples it leaves robust APGD-T (9 target classes x 100), then on those left FAB-T (9 x 100) and
  Square (5,000 forward queries each). The surviving fractions default to the QUEST paper's ViT-Ti
  figures (PGD 43.65 / clean 72.50 after the first attack, AutoAttack 26.57 / 72.50 at the end).

    python bench/gpu_hours.py [--cores 16] [--images 5000] [--clean 0.80]
"""
from __future__ import annotations

import argparse
import io
import time

import numpy as np
from PIL import Image

# measured on an H100 (issue #15): images/s for ViT-S/16 at 224, batch 256
H100 = {"tf32": {"forward": 10_100, "fwd_bwd": 3_450}, "bf16": {"forward": 18_600, "fwd_bwd": 6_900}}
IMAGENET_C = 15 * 5 * 50_000


def jpeg_decode_rate(n: int = 400) -> float:
    """Images/s on one core: decode a 224x224 JPEG (quality 85, as ImageNet-C's files) to a float tensor."""
    import torch
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    base = (rng.random((224, 224, 3)) * 64 + np.linspace(0, 160, 224)[None, :, None]).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(base).save(buf, "JPEG", quality=85)
    data = buf.getvalue()
    t = time.perf_counter()
    for _ in range(n):
        with Image.open(io.BytesIO(data)) as im:
            a = np.array(im.convert("RGB"))
        torch.from_numpy(a).permute(2, 0, 1).float().div_(255)
    return n / (time.perf_counter() - t)


def autoattack_seconds(n_attacked: float, after_ce: float, after_t: float, fig: dict) -> dict[str, float]:
    return {"APGD-CE": n_attacked * 100 / fig["fwd_bwd"],
            "APGD-T": n_attacked * after_ce * 9 * 100 / fig["fwd_bwd"],
            "FAB-T": n_attacked * after_t * 9 * 100 / fig["fwd_bwd"],
            "Square": n_attacked * after_t * 5000 / fig["forward"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cores", type=int, default=16)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--clean", type=float, default=0.80, help="clean accuracy (ViT-S: 79.6 / 80.2 in the paper)")
    ap.add_argument("--after-ce", type=float, default=43.65 / 72.50)
    ap.add_argument("--after-t", type=float, default=26.57 / 72.50)
    args = ap.parse_args()
    per_core = jpeg_decode_rate()
    decode = per_core * args.cores
    print(f"JPEG decode (224 px, q85, PIL) on one core here: {per_core:.0f} img/s -> {decode:.0f} img/s "
          f"on {args.cores} cores")
    for prec, fig in H100.items():
        c_gpu = 2 * IMAGENET_C / fig["forward"]
        c_host = IMAGENET_C / decode
        c = max(c_gpu, c_host)
        aa = autoattack_seconds(args.images * args.clean, args.after_ce, args.after_t, fig)
        aa_pair = 2 * sum(aa.values())
        total = (c + aa_pair) / 3600
        print(f"\n{prec}: ImageNet-C pair {c:.0f} s (GPU {c_gpu:.0f} s, decoding {c_host:.0f} s)")
        print("  AutoAttack per model: " + ", ".join(f"{k} {v:.0f} s" for k, v in aa.items()) +
              f"; pair {aa_pair:.0f} s")
        print(f"  ImageNet-C + AutoAttack on {args.images}, one pair: {total:.2f} GPU-hours "
              f"({'meets' if total < 1 else 'misses'} < 1)")


if __name__ == "__main__":
    main()
