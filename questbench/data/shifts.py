"""ImageNet distribution-shift test sets in their released on-disk layouts, evaluated the published way.

- ImageNet-A, ImageNet-R: ``<root>/<wnid>/<file>``, 200 of the 1,000 classes; the model's 1000-way logits are
  masked to those 200 before the argmax (Hendrycks et al.'s protocol).
- ImageNet-Sketch: ``<root>/<wnid>/<file>``, all 1,000 classes.
- ImageNet-V2: ``<root>/<class index>/<file>`` with integer class folders 0..999 (e.g. matched-frequency).
- ImageNet-ReaL: ImageNet val (``<root>/<wnid>/ILSVRC2012_val_<8 digits>.JPEG``) with the multi-label
  ``real.json``: a prediction is correct if it is in the image's label set; images with an empty set are
  excluded (Beyer et al.'s protocol).

All are shown to the model at resize 256 / center crop 224 (torchvision's eval transform), as timm evaluates
them. Labels are ImageNet-1k class indices.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Optional

import numpy as np

from ..config.settings import SHIFT_DATASETS
from ..errors import QuestbenchError
from .imagefolder import ImageFolderDataset



@lru_cache(maxsize=None)
def synsets(name: str) -> tuple[str, ...]:
    text = resources.files("questbench.data").joinpath("imagenet", f"{name}.txt").read_text()
    return tuple(text.split())


def _folder(root, what: str) -> Path:
    if root is None:
        raise QuestbenchError(f"{what} needs root = <folder>")
    path = Path(root)
    if not path.is_dir():
        raise QuestbenchError(f"{what} folder not found: {path}")
    return path


def _check_folders(path: Path, allowed: set[str], what: str, layout: str) -> None:
    folders = sorted(p.name for p in path.iterdir() if p.is_dir())
    if not folders:
        raise QuestbenchError(f"{what}: {path} has no class folders (expected {layout})")
    foreign = [f for f in folders if f not in allowed]
    if foreign:
        raise QuestbenchError(f"{what}: {path} has folder(s) {', '.join(foreign[:3])} that are not its classes "
                              f"(expected {layout})")


def load_subset(root, which: str) -> ImageFolderDataset:
    """ImageNet-A or -R: 200 class folders; labels are 1000-way indices; ``class_mask`` masks the logits."""
    what = {"imagenet-a": "ImageNet-A", "imagenet-r": "ImageNet-R"}[which]
    path = _folder(root, what)
    subset = synsets(f"{which.replace('-', '_')}_synsets")
    _check_folders(path, set(subset), what, "<root>/<wnid>/<image> for its 200 wnids")
    ds = ImageFolderDataset(path, classes=list(synsets("imagenet_synsets")), name=which)
    mask = np.zeros(1000, dtype=bool)
    mask[[synsets("imagenet_synsets").index(w) for w in subset]] = True
    ds.class_mask = mask
    return ds


def load_sketch(root) -> ImageFolderDataset:
    path = _folder(root, "ImageNet-Sketch")
    _check_folders(path, set(synsets("imagenet_synsets")), "ImageNet-Sketch", "<root>/<wnid>/<image>")
    return ImageFolderDataset(path, classes=list(synsets("imagenet_synsets")), name="imagenet-sketch")


def load_v2(root) -> ImageFolderDataset:
    path = _folder(root, "ImageNet-V2")
    names = [str(i) for i in range(1000)]
    _check_folders(path, set(names), "ImageNet-V2", "<root>/<class index 0..999>/<image>, e.g. "
                   "imagenetv2-matched-frequency-format-val")
    return ImageFolderDataset(path, classes=names, name="imagenet-v2")


def load_real(root, labels: Optional[str] = None) -> ImageFolderDataset:
    """ImageNet val with ReaL label sets; images whose set is empty are left out."""
    path = _folder(root, "ImageNet-ReaL (ImageNet val)")
    if labels is not None:
        if not Path(labels).is_file():
            raise QuestbenchError(f"ImageNet-ReaL labels file not found: {labels}")
        text = Path(labels).read_bytes()
    else:  # the copy timm ships
        import importlib.util
        spec = importlib.util.find_spec("timm")
        shipped = Path(spec.origin).parent / "data" / "_info" / "imagenet_real_labels.json" if spec else None
        if shipped is None or not shipped.is_file():
            raise QuestbenchError("ImageNet-ReaL needs data.labels = <real.json> (timm's copy was not found)")
        text = shipped.read_bytes()
    try:
        real = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise QuestbenchError(f"ImageNet-ReaL labels {labels or 'file'} is not JSON") from None
    if not isinstance(real, list) or len(real) != 50000:
        raise QuestbenchError("ImageNet-ReaL labels must be a list of 50,000 label lists (real.json)")
    _check_folders(path, set(synsets("imagenet_synsets")), "ImageNet-ReaL", "<root>/<wnid>/ILSVRC2012_val_*.JPEG")
    ds = ImageFolderDataset(path, classes=list(synsets("imagenet_synsets")), name="imagenet-real")
    sets = []
    for f in ds.files:
        m = re.search(r"ILSVRC2012_val_(\d{8})", f.name)
        if m is None:
            raise QuestbenchError(f"ImageNet-ReaL: {f.name} is not an ImageNet val file name (ILSVRC2012_val_*)")
        sets.append(tuple(int(c) for c in real[int(m.group(1)) - 1]))
    keep = [i for i, s in enumerate(sets) if s]  # the protocol: images without a ReaL label are excluded
    if not keep:
        raise QuestbenchError(f"ImageNet-ReaL: none of the images in {path} has a ReaL label")
    sub = ds.subset(keep)
    sub.label_sets = [sets[i] for i in keep]
    sub.excluded = len(sets) - len(keep)
    return sub


def load_shift(name: str, root, labels: Optional[str] = None) -> ImageFolderDataset:
    if name in ("imagenet-a", "imagenet-r"):
        return load_subset(root, name)
    if name == "imagenet-sketch":
        return load_sketch(root)
    if name == "imagenet-v2":
        return load_v2(root)
    if name == "imagenet-real":
        return load_real(root, labels)
    raise QuestbenchError(f"unknown shift dataset {name!r}; known: {', '.join(SHIFT_DATASETS)}")
