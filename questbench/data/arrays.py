"""An in-memory dataset of uint8 images, with stable sample ids and a content hash for provenance."""
from __future__ import annotations

import hashlib
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import QuestbenchError


class ArrayDataset(Dataset):
    """uint8 images (N, H, W) or (N, H, W, C) and int labels -> (float CHW in [0, 1], int label)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, name: str, source: str,
                 sample_ids: Optional[Sequence[str]] = None, class_names: Optional[Sequence[str]] = None):
        check_images_and_labels(images, np.asarray(labels), source)
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.name = name
        self.source = source
        self.sample_ids = list(sample_ids) if sample_ids is not None else [str(i) for i in range(len(images))]
        self.class_names = list(class_names) if class_names is not None else None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.class_names) if self.class_names else int(self.labels.max()) + 1

    def image_uint8(self, i: int) -> np.ndarray:
        """The raw HxW or HxWxC uint8 image (what corruptions operate on)."""
        return self.images[i]

    def __getitem__(self, i: int):
        return to_tensor(self.images[i]), int(self.labels[i])

    def subset(self, indices: Sequence[int]) -> "ArrayDataset":
        idx = np.asarray(indices, dtype=np.int64)
        return ArrayDataset(self.images[idx], self.labels[idx], self.name, self.source,
                            [self.sample_ids[i] for i in idx], self.class_names)

    def sha256(self) -> str:
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.images).tobytes())
        h.update(np.ascontiguousarray(self.labels).tobytes())
        return h.hexdigest()


def check_images_and_labels(images: np.ndarray, labels: np.ndarray, source: str) -> None:
    """What every array dataset must be before anything runs on it: uint8 images (N, H, W[, C]) and as many
    non-negative integer class labels (none in an empty subset; a file that holds none is its loader's error)."""
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise QuestbenchError(f"{source}: images must be uint8 N x H x W [x C], not {images.dtype} {images.shape}")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise QuestbenchError(f"{source}: labels must be one integer class per image, not {labels.dtype} "
                              f"{labels.shape}")
    if len(images) != len(labels):
        raise QuestbenchError(f"{source}: {len(images)} images but {len(labels)} labels")
    if len(labels) and labels.min() < 0:
        raise QuestbenchError(f"{source}: labels must be class indices >= 0, found {int(labels.min())}")


def load_npy(path, what: str) -> np.ndarray:
    """A NumPy array file, never unpickled (a .npy may carry a pickle payload); a file that is not one is one
    error line naming it."""
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:  # pickled objects, a bad header
        raise QuestbenchError(f"{what} {path} is not a plain NumPy array file: {str(exc).splitlines()[0]}") from None
    except (OSError, EOFError) as exc:
        raise QuestbenchError(f"cannot read {what} {path}: {exc}") from None


def to_tensor(img: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(img)).float().div_(255.0)
    return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
