"""One ViT-S/16 standard/QUEST pair through a measured slice of `suites/paper-imagenet.toml`, extrapolated to the
full suite: how many GPU-hours a pair costs (issue 40, target: under one).

The data are synthetic JPEGs written in the released on-disk layouts (ImageNet val `<root>/<wnid>/<file>.JPEG`,
ImageNet-C `<root>/<corruption>/<severity>/<wnid>/<file>.JPEG`), so the run reads, decodes and batches them as it
would the real sets; the models are randomly initialized ViT-S/16s (speed does not depend on the weights). The
slice runs the suite's own evaluations (clean, the 75 ImageNet-C settings, FGSM and PGD-20 at 1/255, reference
AutoAttack, the four attack checks, calibration) on a few images each through `questbench run`'s code path; each
evaluation's wall time per image (both models, all of the image's settings and runs) is multiplied by the image
count of the full suite (shown line by line). Shift sets
(ReaL, ImageNet-A) are counted as clean images. AutoAttack's cost depends on how many images survive APGD-CE:
random models are fooled at once, so its line also shows the cost if every attacked image survived to the end.

    python bench/paper_imagenet_slice.py [--device cuda] [--images 64] [--aa-images 16] [--batch 64]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import questbench
from questbench.config.corruptions import COMMON_CORRUPTIONS
from questbench.config.suite import parse_suite
from questbench.models.build import ModelSpec, build_model, save_checkpoint
from questbench.run.runner import run_suite

SYNSETS = Path(questbench.__file__).parent / "data" / "imagenet" / "imagenet_synsets.txt"
# distinct images of the full suite per evaluation, each with all its settings and runs (ImageNet-1k val 50,000,
# each with its 75 ImageNet-C settings; AutoAttack on 5,000; the four checks on 1,000; calibration on the clean
# image and its 75 settings; ReaL and ImageNet-A as clean images, their calibration not counted)
FULL = {"clean": 50_000, "shift": 50_000 + 7_500, "corruption": 50_000, "attack:fgsm": 50_000,
        "attack:pgd": 50_000, "attack:autoattack": 5_000, "check": 1_000, "calibration": 50_000}


def write_jpegs(root: Path, wnids: list[str], per_class: int, size: int, rng) -> None:
    for w in wnids:
        (root / w).mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            a = (rng.random((size, size * 4 // 3, 3)) * 255).astype(np.uint8)
            Image.fromarray(a).save(root / w / f"ILSVRC2012_val_{w}_{j:04d}.JPEG", quality=85)


def write_imagenet_c(root: Path, val: Path, severities=(1, 2, 3, 4, 5)) -> None:
    """ImageNet-C's layout: every val image, 224 px center crop, per corruption and severity (pixels random)."""
    for c in COMMON_CORRUPTIONS:
        for s in severities:
            for f in val.rglob("*.JPEG"):
                out = root / c / str(s) / f.parent.name / f.name
                out.parent.mkdir(parents=True, exist_ok=True)
                with Image.open(f) as im:
                    im.convert("RGB").resize((224, 224)).save(out, quality=85)


def registry(folder: Path) -> Path:
    lines = []
    for kind, pair in (("standard", "vit-s-quest"), ("quest", "vit-s-standard")):
        spec = ModelSpec(arch="vit_small_patch16_224", attention=kind, num_classes=1000)
        save_checkpoint(build_model(spec).eval(), folder / f"vit-s-{kind}.safetensors")
        lines += ["[[model]]", f'name = "vit-s-{kind}"', 'arch = "vit_small_patch16_224"', f'attention = "{kind}"',
                  f'source = "path:vit-s-{kind}.safetensors"', "num_classes = 1000", f'pair = "{pair}"', ""]
    (folder / "registry.toml").write_text("\n".join(lines))
    return folder / "registry.toml"


def suite_text(reg: Path, val: Path, imagenet_c: Path, args) -> str:
    return f'''
name = "paper-imagenet-slice"
models = ["vit-s-standard", "vit-s-quest"]
registry = ["{reg}"]
device = "{args.device}"
batch_size = {args.batch}
num_workers = {args.workers}
precision = "fp32"
[data]
dataset = "imagenet"
split = "val"
root = "{val}"
classes = "{SYNSETS}"
[corruptions]
names = "common"
severities = [1, 2, 3, 4, 5]
mode = "imagenet-c"
root = "{imagenet_c}"
[[attacks]]
attack = "fgsm"
eps = ["1/255"]
[[attacks]]
attack = "pgd"
eps = ["1/255"]
steps = 20
step_size_ratio = 0.15
[[attacks]]
attack = "autoattack"
eps = ["1/255"]
samples = {args.aa_images}
[checks]
samples = {args.aa_images}
eps = "1/255"
steps = 20
long_steps = 100
long_restarts = 3
large_eps = "16/255"
transfer = true
[calibration]
'''


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--images", type=int, default=64, help="val images of the slice (ImageNet-C: the same x 75)")
    ap.add_argument("--aa-images", type=int, default=16, help="AutoAttack and check images of the slice")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--keep", type=Path, default=None, help="write the data and results here (else a temp dir)")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="paper-slice-"))
    rng = np.random.default_rng(0)
    wnids = SYNSETS.read_text().split()[:: max(1, 1000 // max(1, args.images))][: args.images]
    t = time.perf_counter()
    write_jpegs(work / "val", wnids, 1, 256, rng)
    write_imagenet_c(work / "imagenet-c", work / "val")
    print(f"data: {args.images} val JPEGs and {75 * args.images} ImageNet-C JPEGs in {time.perf_counter() - t:.0f} s",
          flush=True)
    suite = parse_suite(suite_text(registry(work), work / "val", work / "imagenet-c", args), "slice.toml")
    t = time.perf_counter()
    summary = run_suite(suite, work / "out", quiet=True)
    print(f"slice: {summary.jobs_run} jobs in {time.perf_counter() - t:.0f} s wall on {args.device}", flush=True)
    report(questbench.load_results(work / "out"))


def report(res) -> None:
    """Seconds per image of each evaluation in the slice, times its image count in the full suite."""
    jobs, samples = res.jobs, res.samples
    total = 0.0
    print(f"{'evaluation':<22}{'slice s':>9}{'images':>8}{'s/image':>10}{'full images':>13}{'full h (pair)':>15}")
    for name, full in FULL.items():
        kind, _, attack = name.partition(":")
        sel = jobs[(jobs.evaluation == kind) & ((jobs.attack == attack) if attack else True)]
        if sel.empty:
            print(f"{name:<22}{'(not in the slice)':>28}")
            continue
        s = samples[samples.evaluation == kind]
        if attack:
            s = s[s.attack == attack]
        images = s.sample_id.nunique()
        per_image = float(sel.wall_s.sum()) / images  # both models, every setting and run of the image
        hours = per_image * full / 3600
        total += hours
        print(f"{name:<22}{sel.wall_s.sum():>9.1f}{int(images):>8}{per_image:>10.4f}{full:>13,}{hours:>15.3f}",
              flush=True)
    missing = f" ({len(res.missing_jobs)} planned jobs missing: a lower bound)" if res.missing_jobs else ""
    print(f"full suite, one pair: {total:.2f} h on this device{missing} (target: under 1 GPU-hour)")
    aa = samples[(samples.evaluation == "attack") & (samples.attack == "autoattack")]
    if len(aa):
        print(f"AutoAttack: {aa.correct.mean():.1%} of the slice survived (random weights: the real pair's survivors "
              "run APGD-T, FAB-T and Square too, so its line is a lower bound for trained models)")


if __name__ == "__main__":
    main()
