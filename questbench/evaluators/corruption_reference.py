"""The reference corruption path: one image through imagecorruptions (the imaug fork), seeded, as ImageNet-C.

Each corrupted image is a pure function of (suite seed, sample id, corruption, severity): a seed is derived
from those four and passed explicitly. glass_blur and impulse_noise take it as ``seed=``; the other
corruptions draw from numpy's global generator, which is seeded with the same value just for the call and
restored afterwards, so no corruption depends on state left by anything else.

Image policy (documented in the README):
- gray images are replicated to 3 channels (what imagecorruptions itself does); the corrupted image stays
  RGB and the model's preprocessing turns it back to gray with ITU-R 601 luma weights;
- images smaller than 32 px on a side (imagecorruptions' minimum) are upsampled, bilinear, so the short side
  is 32, then corrupted at that size; the model's preprocessing resizes to its own input size;
- non-square images are corrupted as they are (the imaug fork supports any size >= 32); an image folder, whose
  files differ in size, is corrupted in native mode on its eval view (resize 256, center crop 224 by default: what
  the model is shown), without the JPEG round trip;
- ``mode="faithful"`` reproduces how ImageNet-C was made: resize short side to 256, center-crop 224,
  corrupt, JPEG round trip at quality 85.
"""
from __future__ import annotations

import contextlib
import hashlib
import io

import numpy as np
import torch
from PIL import Image

from ..config.settings import check_corruption
from ..data.transforms import center_crop_resize, to_rgb
from ..errors import QuestbenchError

MIN_SIDE = 32
MODES = ("native", "faithful")
FAITHFUL_RESIZE, FAITHFUL_CROP, FAITHFUL_JPEG_QUALITY = 256, 224, 85
_TAKES_SEED = ("glass_blur", "impulse_noise")


def corruption_seed(suite_seed: int, sample_id: str, corruption: str, severity: int) -> int:
    digest = hashlib.sha256(f"{suite_seed}|{sample_id}|{corruption}|{severity}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


@contextlib.contextmanager
def _numpy_global_seed(seed: int):
    if torch.utils.data.get_worker_info() is not None:
        # a DataLoader worker of ours: nobody else draws from its global generator, and saving and restoring
        # that state costs about a tenth of a 32 px corruption
        np.random.seed(seed)
        yield
        return
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def corrupt_image(image: np.ndarray, corruption: str, severity: int, seed: int) -> np.ndarray:
    """imagecorruptions.corrupt with an explicit seed: same inputs, same output, whatever ran before."""
    from imagecorruptions import corrupt

    kwargs = {"seed": seed} if corruption in _TAKES_SEED else {}
    with _numpy_global_seed(seed):
        return corrupt(image, corruption_name=corruption, severity=severity, **kwargs)


def prepare_image(image: np.ndarray, mode: str = "native") -> np.ndarray:
    """uint8 HxW[xC] -> uint8 HxWx3 ready for imagecorruptions, per the module's image policy."""
    if mode not in MODES:
        raise QuestbenchError(f"corruption mode must be one of {MODES}, not {mode!r}")
    image = to_rgb(image)
    h, w = image.shape[:2]
    if mode == "faithful":  # torchvision Resize(256) + CenterCrop(224), as make_imagenet_c.py did
        return center_crop_resize(image, FAITHFUL_RESIZE, FAITHFUL_CROP)
    if min(h, w) < MIN_SIDE:
        scale = MIN_SIDE / min(h, w)
        size = (max(MIN_SIDE, round(w * scale)), max(MIN_SIDE, round(h * scale)))
        return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    return image


def jpeg_round_trip(image: np.ndarray, quality: int = FAITHFUL_JPEG_QUALITY) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def corrupted_sample(image: np.ndarray, sample_id: str, corruption: str, severity: int, suite_seed: int,
                     mode: str = "native") -> np.ndarray:
    """The corrupted uint8 HxWx3 image for one sample: a pure function of its arguments."""
    check_corruption(corruption, severity)
    out = corrupt_image(prepare_image(image, mode), corruption, severity,
                        corruption_seed(suite_seed, sample_id, corruption, severity))
    return jpeg_round_trip(out) if mode == "faithful" else out
