"""Register the non-standard attention ViTs as timm model names (e.g. ``vit_small_patch16_224_quest``).

Imported by ``questbench`` the moment timm is (``questbench/__init__.py``), so ``timm.create_model`` and timm's
own train/validate scripts can build them. It names the kinds from the configuration's catalogue and reaches the
attention classes only when a model is built, so importing it never imports ``attention`` (which imports timm).
"""
from __future__ import annotations

import sys

import torch.nn as nn
from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer, _create_vision_transformer

from ..config.settings import ATTENTION_NAMES

VIT_SIZES = {
    "tiny": dict(patch_size=16, embed_dim=192, depth=12, num_heads=3),
    "small": dict(patch_size=16, embed_dim=384, depth=12, num_heads=6),
    "base": dict(patch_size=16, embed_dim=768, depth=12, num_heads=12),
    "large": dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16),
}


def _make_entrypoint(size: str, kind: str):
    base_name = f"vit_{size}_patch16_224"
    name = f"{base_name}_{kind}"

    def entrypoint(pretrained: bool = False, **kwargs) -> VisionTransformer:
        # pretrained=True loads the standard timm weights (same parameter names) into the new attention kind
        from .attention import ATTENTION_KINDS
        args = dict(VIT_SIZES[size], attn_layer=ATTENTION_KINDS[kind])
        return _create_vision_transformer(base_name, pretrained=pretrained, **dict(args, **kwargs))

    entrypoint.__name__ = name
    entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"ViT-{size[0].upper()}/16 at 224 px with {kind} attention (questbench)."
    return name, entrypoint


REGISTERED: list[str] = []
for _size in VIT_SIZES:
    for _kind in ATTENTION_NAMES:
        if _kind == "standard":
            continue
        _name, _fn = _make_entrypoint(_size, _kind)
        setattr(sys.modules[__name__], _name, _fn)
        register_model(_fn)
        REGISTERED.append(_name)


class ConvStemEmbed(nn.Module):
    """Convolutional stem for small images (Xiao et al. 2021, "Early convolutions help transformers see
    better"): two 3x3 convs (the second stride 2) then a 2x2 stride-2 projection, so a 28x28 image becomes
    7x7 tokens. Signature follows timm's PatchEmbed so ``VisionTransformer(embed_layer=...)`` accepts it."""

    def __init__(self, img_size=28, patch_size=4, in_chans=1, embed_dim=96, bias=True, **kwargs):
        super().__init__()
        width = max(16, embed_dim // 2)
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, width // 2, 3, 1, 1, bias=False), nn.BatchNorm2d(width // 2), nn.GELU(),
            nn.Conv2d(width // 2, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.GELU())
        self.proj = nn.Conv2d(width, embed_dim, patch_size // 2, patch_size // 2, bias=bias)
        size = img_size if isinstance(img_size, (tuple, list)) else (img_size, img_size)
        self.img_size = tuple(size)
        self.patch_size = (patch_size, patch_size)
        self.grid_size = (size[0] // patch_size, size[1] // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.flatten = True
        self.output_fmt = "NCHW"
        self.dynamic_img_pad = False

    def feat_ratio(self, as_scalar=True):
        return self.patch_size[0] if as_scalar else self.patch_size

    def dynamic_feat_size(self, img_size):
        return img_size[0] // self.patch_size[0], img_size[1] // self.patch_size[1]

    def forward(self, x):
        return self.proj(self.stem(x)).flatten(2).transpose(1, 2)


@register_model
def vit_convstem_tiny(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """A small ViT with a convolutional stem, for 28-32 px images (questbench's built-in Fashion-MNIST zoo)."""
    if pretrained:
        raise RuntimeError("vit_convstem_tiny has no timm pretrained weights; use the questbench zoo")
    args = dict(img_size=28, patch_size=4, embed_dim=96, depth=4, num_heads=3, mlp_ratio=4.0,
                embed_layer=ConvStemEmbed, class_token=True, global_pool="token")
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):  # timm factory extras
        kwargs.pop(key, None)
    return VisionTransformer(**dict(args, **kwargs))
