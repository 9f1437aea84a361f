"""The corruption catalogue: ImageNet-C's 15 common corruptions (the ones of mCE), its 4 extras, and the
four groups the paper reports."""
from __future__ import annotations

COMMON_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL_CORRUPTIONS = COMMON_CORRUPTIONS + EXTRA_CORRUPTIONS
CORRUPTION_GROUP = {
    **{c: "noise" for c in COMMON_CORRUPTIONS[:3]},
    **{c: "blur" for c in COMMON_CORRUPTIONS[3:7]},
    **{c: "weather" for c in COMMON_CORRUPTIONS[7:11]},
    **{c: "digital" for c in COMMON_CORRUPTIONS[11:]},
    **{c: "extra" for c in EXTRA_CORRUPTIONS},
}
