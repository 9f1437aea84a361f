"""Image transforms shared by datasets and corruptions: gray to RGB, and the resize / center crop of ImageNet
evaluation."""
from __future__ import annotations

import numpy as np
from PIL import Image


def to_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 HxW, HxWx1 or HxWx3 -> HxWx3 (gray replicated, as imagecorruptions does)."""
    if image.ndim == 2:
        return np.stack([image] * 3, axis=-1)
    if image.shape[-1] == 1:
        return np.repeat(image, 3, axis=-1)
    return image



def center_crop_resize(image: np.ndarray, resize: int, crop: int) -> np.ndarray:
    """Short side to ``resize``, then center crop ``crop`` x ``crop``: torchvision's ``Resize(resize)`` and
    ``CenterCrop(crop)`` on a PIL image (bilinear, the long side truncated, the crop offset rounded), exactly the
    transform that made ImageNet-C and that ImageNet evaluation uses. 0 for either step skips it (images as
    stored)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    pil = Image.fromarray(to_rgb(image))
    if resize:  # 0: the short side as stored
        pil = TF.resize(pil, resize, interpolation=InterpolationMode.BILINEAR)
    return np.asarray(TF.center_crop(pil, crop)) if crop else np.asarray(pil)
