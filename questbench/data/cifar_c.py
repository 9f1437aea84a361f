"""CIFAR-10-C / CIFAR-100-C: ``<root>/<corruption>.npy`` (50,000 x 32 x 32 x 3 uint8, severity-major:
rows 0-9,999 are severity 1, ...) and ``<root>/labels.npy``. Sample ids are the test-set index, ``test/NNNNN``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import QuestbenchError
from .arrays import ArrayDataset, load_npy

PER_SEVERITY = 10_000


def _labels(root: Path) -> np.ndarray:
    p = root / "labels.npy"
    if not p.is_file():
        raise QuestbenchError(f"CIFAR-C folder {root} lacks labels.npy")
    labels = load_npy(p, "CIFAR-C labels")
    if labels.shape != (5 * PER_SEVERITY,) or not np.issubdtype(labels.dtype, np.integer):
        raise QuestbenchError(f"{p}: expected 50000 integer labels (5 severities x 10000), found {labels.dtype} "
                              f"{labels.shape}")
    return labels


def check_cifar_c_folder(root, corruptions: Sequence[str]) -> None:
    root = Path(root)
    if not root.is_dir():
        raise QuestbenchError(f"CIFAR-C root not found: {root}")
    _labels(root)
    missing = [c for c in corruptions if not (root / f"{c}.npy").is_file()]
    if missing:
        raise QuestbenchError(f"CIFAR-C folder {root} lacks: {', '.join(c + '.npy' for c in missing)}")


class CifarCSource:
    """Picklable grid source: memory-maps each corruption file once per worker."""

    def __init__(self, root, indices: Sequence[int]):
        self.root = Path(root)
        self.indices = np.asarray(indices)
        self._arrays: dict[str, np.ndarray] = {}

    def array(self, corruption: str) -> np.ndarray:
        if corruption not in self._arrays:
            try:
                arr = np.load(self.root / f"{corruption}.npy", mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError, EOFError) as exc:
                raise QuestbenchError(f"{self.root / (corruption + '.npy')} is not a plain NumPy array file: "
                                      f"{str(exc).splitlines()[0]}") from None
            if arr.shape != (5 * PER_SEVERITY, 32, 32, 3) or arr.dtype != np.uint8:
                raise QuestbenchError(f"{self.root / (corruption + '.npy')}: expected uint8 (50000, 32, 32, 3), "
                                      f"found {arr.dtype} {arr.shape}")
            self._arrays[corruption] = arr
        return self._arrays[corruption]

    def __getstate__(self):
        return {"root": self.root, "indices": self.indices, "_arrays": {}}

    def __call__(self, setting, i: int) -> np.ndarray:
        return np.asarray(self.array(setting.corruption)[(setting.severity - 1) * PER_SEVERITY + self.indices[i]])


def load_cifar_c_clean(root, clean_root=None, **_) -> ArrayDataset:
    """The clean side for a CIFAR-C run: labels from labels.npy; images from ``clean_root`` if given
    (a ``<root>/clean.npy`` of 10000x32x32x3 is also accepted)."""
    root = Path(root) if root else None
    if root is None or not root.is_dir():
        raise QuestbenchError(f"CIFAR-C root not found: {root}")
    labels = _labels(root)[:PER_SEVERITY]
    clean = Path(clean_root) if clean_root else root / "clean.npy"
    if not clean.is_file():
        raise QuestbenchError(f"CIFAR-C clean images not found at {clean} (10000 x 32 x 32 x 3 uint8 .npy)")
    images = load_npy(clean, "CIFAR-C clean images")
    if images.shape != (PER_SEVERITY, 32, 32, 3) or images.dtype != np.uint8:
        raise QuestbenchError(f"{clean}: expected uint8 (10000, 32, 32, 3), found {images.dtype} {images.shape}")
    ids = [f"test/{i:05d}" for i in range(PER_SEVERITY)]
    return ArrayDataset(images, labels, "cifar-c", f"folder:{root}", ids)
