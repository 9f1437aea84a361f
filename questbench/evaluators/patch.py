"""Adversarial patches aimed at attention: does QUEST stop a few adversarial tokens from taking every query's
attention? (Attention-Fool, Lovisotto et al. 2022; Patch-Fool, Fu et al. 2022.)

Patches are aligned to the model's token grid (the built-in conv-stem ViT: 7 x 7 tokens of 4 x 4 px; a
patch16 ViT at 224 px: 14 x 14 tokens of 16 px). Inside a patch the pixels are free in [0, 1]; outside they
are the input's, bit for bit. Each sample records, besides the outcome, the attention mass all queries give
the patch tokens (mean over layers, heads and queries) and the patch tokens' key norms, clean and attacked.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import QuestbenchError
from ..settings import PatchConfig
from .attacks import AttackResult
from .common import PrecisionWrapper, batches, derive_seed, frozen, predictions, seeded


def token_grid(model: nn.Module, image_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """(grid rows, grid cols, token size in image pixels, prefix tokens) for images of ``image_hw``."""
    net = getattr(model, "net", model)
    embed = getattr(net, "patch_embed", None)
    if embed is None or not hasattr(embed, "grid_size"):
        raise QuestbenchError("patch attacks need a ViT with a token grid (timm patch_embed.grid_size)")
    gh, gw = embed.grid_size
    h, w = image_hw
    if h % gh or w % gw or h // gh != w // gw:
        raise QuestbenchError(f"patch attack: {h}x{w} images do not tile the model's {gh}x{gw} token grid")
    return gh, gw, h // gh, int(getattr(net, "num_prefix_tokens", 0))


def check_patch_geometry(model: nn.Module, cfg: PatchConfig, image_hw: tuple[int, int]) -> None:
    """Everything about a patch attack that a model and an image size decide, checked before any job runs: the
    token grid, that the patches fit it, that ``layers`` name blocks the model has."""
    gh, gw, _, _ = token_grid(model, image_hw)
    if cfg.size > min(gh, gw) or cfg.patches > (gh // cfg.size) * (gw // cfg.size):
        raise QuestbenchError(f"patch attack: {cfg.patches} patch(es) of {cfg.size}x{cfg.size} tokens do not fit "
                              f"the model's {gh}x{gw} token grid")
    depth = sum(1 for m in model.modules() if hasattr(m, "qkv") and hasattr(m, "num_heads"))
    if cfg.layers is not None and any(i >= depth for i in cfg.layers):
        raise QuestbenchError(f"patch attack: layers {list(cfg.layers)} name blocks the model does not have "
                              f"(it has {depth}: 0..{depth - 1})")


def patch_tiles(cfg: PatchConfig, gh: int, gw: int, sample_id: str, seed: int, trial: int) -> list[int]:
    """Indices of the tiles (size x size tokens, non-overlapping, raster order) that carry the patches."""
    rows, cols = gh // cfg.size, gw // cfg.size
    if cfg.patches > rows * cols:
        raise QuestbenchError(f"patch attack: {cfg.patches} patches of {cfg.size} tokens do not fit a {gh}x{gw} grid")
    if cfg.position == "fixed":
        return list(range(cfg.patches))
    rng = np.random.default_rng(derive_seed(seed, "patch-position", sample_id, trial if cfg.position == "worst" else 0))
    return sorted(int(t) for t in rng.choice(rows * cols, size=cfg.patches, replace=False))


def _masks(cfg: PatchConfig, tiles: list[list[int]], gh: int, gw: int, px: int, prefix: int,
           shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel masks (B, 1, H, W) and token masks (B, tokens incl. prefix) of the patches."""
    b, _, h, w = shape
    tok = torch.zeros(b, gh, gw, dtype=torch.bool)
    cols = gw // cfg.size
    for i, ts in enumerate(tiles):
        for t in ts:
            r, c = divmod(t, cols)
            tok[i, r * cfg.size:(r + 1) * cfg.size, c * cfg.size:(c + 1) * cfg.size] = True
    pix = tok.repeat_interleave(px, 1).repeat_interleave(px, 2).unsqueeze(1)
    tokens = torch.cat([torch.zeros(b, prefix, dtype=torch.bool), tok.flatten(1)], 1)
    return pix, tokens


class _AttentionOnPatch:
    """Collects, per layer, the attention mass on the patch tokens and their key norms (gradients intact)."""

    def __init__(self, tokens: torch.Tensor, layers: Optional[tuple[int, ...]], names: dict):
        self.tokens = tokens.float()  # (B, N)
        self.layers, self.names = layers, names
        self.mass: list[torch.Tensor] = []
        self.k_norm: list[torch.Tensor] = []

    def __call__(self, module, q, k, attn):
        m = (attn * self.tokens[:, None, None, :].to(attn.device)).sum(-1).mean((1, 2))  # (B,)
        kn = (k.norm(dim=-1).mean(1) * self.tokens.to(k.device)).sum(1) / self.tokens.sum(1).clamp_min(1)
        self.mass.append(m)
        self.k_norm.append(kn.detach())

    def loss_terms(self) -> torch.Tensor:
        chosen = [m for i, m in enumerate(self.mass) if self.layers is None or i in self.layers]
        if not chosen:
            raise QuestbenchError(f"patch attack: layers {self.layers} select none of {len(self.mass)}")
        return torch.stack(chosen).mean(0)


def _forward(model, x, tokens, layers):
    from ..attention import tap_attention
    tap = _AttentionOnPatch(tokens, layers, {})
    with tap_attention(model, tap):
        logits = model(x)
    return logits, tap


def attack_patch_batch(model: nn.Module, cfg: PatchConfig, x: torch.Tensor, y: torch.Tensor, sample_ids,
                       seed: int, images: Optional[list] = None) -> list[dict[str, Any]]:
    """One record per sample: robust outcome and the attention on the patch, clean and attacked. ``images``,
    if given, receives each restart's attacked batch (for inspection and tests)."""
    gh, gw, px, prefix = token_grid(model.model if isinstance(model, PrecisionWrapper) else model, x.shape[-2:])
    with torch.no_grad():
        clean_logits = model(x)
    clean_pred = predictions(clean_logits)
    n_layers = sum(1 for m in model.modules() if hasattr(m, "qkv") and hasattr(m, "num_heads"))
    best = {"fooled": torch.zeros(len(x), dtype=torch.bool), "pred": clean_pred.cpu().clone(),
            **{k: torch.zeros(len(x), n_layers) for k in ("mass_clean", "mass_adv", "k_clean", "k_adv")}}
    if cfg.patches == 0:  # the sweep's clean anchor: nothing to optimize
        return _records(best, x, y, clean_pred, sample_ids)
    for trial in range(cfg.restarts):
        tiles = [patch_tiles(cfg, gh, gw, sid, seed, trial) for sid in sample_ids]
        pix, tokens = _masks(cfg, tiles, gh, gw, px, prefix, tuple(x.shape))
        pix = pix.to(x.device)
        with torch.no_grad():
            _, tap = _forward(model, x, tokens, cfg.layers)
            mass_clean = torch.stack(tap.mass, 1).cpu()  # (B, layers)
            k_clean = torch.stack(tap.k_norm, 1).cpu()
        with seeded(derive_seed(seed, cfg.key, "init", trial, sample_ids[0]), str(x.device)):
            content = torch.rand_like(x)
        for _ in range(cfg.steps):
            content.requires_grad_(True)
            x_adv = torch.where(pix, content, x)
            logits, tap = _forward(model, x_adv, tokens, cfg.layers)
            objective = F.cross_entropy(logits, y, reduction="sum") if cfg.loss == "ce" else tap.loss_terms().sum()
            grad, = torch.autograd.grad(objective, content)
            content = (content.detach() + cfg.step_size * grad.sign()).clamp_(0, 1)
        with torch.no_grad():
            x_adv = torch.where(pix, content, x)
            if images is not None:
                images.append((x_adv.clone(), pix.clone()))
            logits, tap = _forward(model, x_adv, tokens, cfg.layers)
            pred = predictions(logits).cpu()
            mass_adv = torch.stack(tap.mass, 1).cpu()
            k_adv = torch.stack(tap.k_norm, 1).cpu()
        # the first restart that fools a sample decides its record; otherwise the last one does
        take = ~best["fooled"] & ((pred != y.cpu()) | torch.tensor(trial == cfg.restarts - 1))
        best["pred"] = torch.where(take, pred, best["pred"])
        for key, value in (("mass_clean", mass_clean), ("mass_adv", mass_adv), ("k_clean", k_clean),
                           ("k_adv", k_adv)):
            best[key] = torch.where(take[:, None], value, best[key])
        best["fooled"] |= pred != y.cpu()
    return _records(best, x, y, clean_pred, sample_ids)


def _records(best, x, y, clean_pred, sample_ids) -> list[dict[str, Any]]:
    out = []
    y, clean_pred = y.cpu(), clean_pred.cpu()
    layers = {k: best[k] for k in ("mass_clean", "mass_adv", "k_clean", "k_adv")}
    names = {"mass_clean": "patch_mass_clean", "mass_adv": "patch_mass_adv", "k_clean": "patch_k_norm_clean",
             "k_adv": "patch_k_norm_adv"}
    for j, sid in enumerate(sample_ids):
        clean_ok = bool(clean_pred[j] == y[j])
        pred = int(best["pred"][j])
        rec = {"sample_id": sid, "label": int(y[j]), "clean_pred": int(clean_pred[j]), "clean_correct": clean_ok,
               "pred": pred, "correct": bool(clean_ok and pred == int(y[j]))}
        for key, name in names.items():  # mean over layers, and each layer
            rec[name] = round(float(layers[key][j].mean()), 6)
            rec[f"{name}_layers"] = [round(float(v), 6) for v in layers[key][j]]
        out.append(rec)
    return out


def evaluate_patch(model: nn.Module, dataset, cfg: PatchConfig, seed: int = 0, batch_size: int = 128,
                   device: str = "cpu", precision: str = "fp32",
                   on_batch: Optional[Callable[[int], None]] = None, spans: Spans = None) -> AttackResult:
    """Patch-attack every sample of ``dataset``; one record per sample."""
    wrapped = frozen(model, precision, device)
    records: list[dict[str, Any]] = []
    for start, idx, x, y in batches(dataset, batch_size, device, spans):
        records += attack_patch_batch(wrapped, cfg, x, y, [dataset.sample_ids[i] for i in idx],
                                      derive_seed(seed, cfg.key, start))
        if on_batch:
            on_batch(len(idx))
    return AttackResult(config=cfg.resolved(), records=records, flags=[])
