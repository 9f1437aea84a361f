"""Colour test images without a download: crops of the photos scikit-image bundles (astronaut, chelsea,
coffee, rocket). Fashion-MNIST is gray, which leaves hue and saturation untested; these are for validating
colour-dependent code (the corruption engines) offline."""
from __future__ import annotations

import numpy as np


def colour_crops(n: int, size: int, seed: int = 0) -> np.ndarray:
    """n uint8 (size, size, 3) crops; each photo is first scaled so its short side is 3 x size, so a crop holds
    a recognisable part of it rather than a few flat pixels."""
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = []
    for p in (skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(), skimage.data.rocket()):
        h, w = p.shape[:2]
        f = 3 * size / min(h, w)
        photos.append(np.asarray(Image.fromarray(p).resize((max(size, round(w * f)), max(size, round(h * f))),
                                                           Image.BILINEAR)))
    out = []
    for k in range(n):
        p = photos[k % len(photos)]
        y, x = rng.integers(0, p.shape[0] - size + 1), rng.integers(0, p.shape[1] - size + 1)
        out.append(p[y:y + size, x:x + size])
    return np.stack(out)
