"""ImageNet-style class folders: ``<root>/<wnid>/<file>.JPEG``.

``__getitem__`` applies the standard evaluation transform (resize short side 256, center-crop 224);
``image_uint8`` gives the decoded image at its own size, for corruptions to prepare as they need.
Sample ids are ``<wnid>/<file stem>``, the same ids ImageNet-C uses, so clean and corrupted results pair up.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import QuestbenchError

IMG_EXTENSIONS = (".jpeg", ".jpg", ".png")


def scan_class_folders(root: Path, classes: Optional[Sequence[str]] = None) -> tuple[list[Path], list[int], list[str]]:
    if not root.is_dir():
        raise QuestbenchError(f"image folder not found: {root}")
    classes = list(classes) if classes is not None else sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise QuestbenchError(f"{root} has no class sub-folders (expected <root>/<wnid>/<file>.JPEG)")
    files, labels = [], []
    for idx, c in enumerate(classes):
        folder = root / c
        if not folder.is_dir():
            continue
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() in IMG_EXTENSIONS:
                files.append(f)
                labels.append(idx)
    if not files:
        raise QuestbenchError(f"{root} has class folders but no images ({', '.join(IMG_EXTENSIONS)})")
    return files, labels, classes


def read_rgb(path: Path) -> np.ndarray:
    """An image file as uint8 RGB; one that cannot be decoded is one error line naming it."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise QuestbenchError(f"image missing: {path}") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:  # a bomb: more pixels than PIL decodes
        raise QuestbenchError(f"cannot read image {path}: {exc}") from None


class ImageFolderDataset(Dataset):
    def __init__(self, root, classes: Optional[Sequence[str]] = None, resize: int = 256, crop: int = 224,
                 name: str = "imagefolder"):
        self.root = Path(root)
        self.files, labels, self.class_names = scan_class_folders(self.root, classes)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.sample_ids = [f"{f.parent.name}/{f.stem}" for f in self.files]
        if len(set(self.sample_ids)) != len(self.sample_ids):  # a.jpg and a.png in one class: one id, two images
            seen: dict[str, Path] = {}
            for f, sid in zip(self.files, self.sample_ids):
                if sid in seen:
                    raise QuestbenchError(f"{seen[sid]} and {f} share the sample id {sid!r} (a sample is "
                                          "<class>/<file name without extension>): rename or remove one")
                seen[sid] = f
        self.resize, self.crop = resize, crop
        self.name = name
        self.source = f"folder:{self.root}"

    def __len__(self) -> int:
        return len(self.files)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def image_uint8(self, i: int) -> np.ndarray:
        return read_rgb(self.files[i])

    def eval_view_uint8(self, i: int) -> np.ndarray:
        """The image as the model is shown it: short side to ``resize``, center crop ``crop`` (0: that step skipped;
        both 0: as stored)."""
        from .transforms import center_crop_resize
        if not self.resize and not self.crop:
            return self.image_uint8(i)
        return center_crop_resize(self.image_uint8(i), self.resize, self.crop)

    def __getitem__(self, i: int):
        img = self.eval_view_uint8(i)
        return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0), int(self.labels[i])

    def subset(self, indices):
        sub = object.__new__(ImageFolderDataset)
        sub.__dict__.update(self.__dict__)
        idx = list(indices)
        sub.files = [self.files[i] for i in idx]
        sub.labels = self.labels[idx]
        sub.sample_ids = [self.sample_ids[i] for i in idx]
        if getattr(self, "label_sets", None) is not None:  # ImageNet-ReaL's multi-label sets travel along
            sub.label_sets = [self.label_sets[i] for i in idx]
        return sub


def load_image_folder(root, **kwargs) -> ImageFolderDataset:
    if root is None:
        raise QuestbenchError("an image folder dataset needs root=")
    return ImageFolderDataset(root, **kwargs)
