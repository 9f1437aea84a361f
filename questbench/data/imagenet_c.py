"""The released ImageNet-C tree: ``<root>/<corruption>/<severity>/<wnid>/<file>.JPEG``.

Images there are already 224x224 (resized, cropped, corrupted, JPEG-saved); they load as they are.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import QuestbenchError
from .imagefolder import ImageFolderDataset, read_rgb


def check_imagenet_c_tree(root, corruptions: Sequence[str], severities: Sequence[int]) -> None:
    """Raise one error naming every (corruption, severity) folder that is missing."""
    root = Path(root)
    if not root.is_dir():
        raise QuestbenchError(f"ImageNet-C root not found: {root}")
    missing = [f"{c}/{s}" for c in corruptions for s in severities if not (root / c / str(s)).is_dir()]
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise QuestbenchError(f"ImageNet-C tree {root} lacks <corruption>/<severity> folders: {shown}")


class ImageNetCSource:
    """Picklable grid source reading released ImageNet-C images, aligned to the clean dataset's sample ids."""

    def __init__(self, root, clean: ImageFolderDataset):
        self.root = Path(root)
        self.sample_ids = clean.sample_ids
        self.suffixes = {sid: f.suffix for sid, f in zip(clean.sample_ids, clean.files)}

    def path(self, setting, i: int) -> Path:
        sid = self.sample_ids[i]
        return self.root / setting.corruption / str(setting.severity) / (sid + self.suffixes[sid])

    def __call__(self, setting, i: int) -> np.ndarray:
        return read_rgb(self.path(setting, i))


def check_alignment(source: ImageNetCSource, settings) -> None:
    """Every clean sample must exist in every corrupted folder (checked before anything runs)."""
    for st in settings:
        missing = [source.sample_ids[i] for i in range(len(source.sample_ids)) if not source.path(st, i).is_file()]
        if missing:
            raise QuestbenchError(f"ImageNet-C {st.corruption}/{st.severity} lacks {len(missing)} of the clean "
                                  f"images, e.g. {missing[0]}")
