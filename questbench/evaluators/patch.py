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
from ..config.settings import PatchConfig
from .attacks import AttackResult
from .common import NonFiniteLogits, PrecisionWrapper, Spans, batches, derive_seed, frozen, predictions, seeded


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


class _AttentionOnTokens:
    """Collects, per layer, the attention mass all queries give each token set and that set's mean key norm
    (gradients intact): the patch tokens, and the tokens the patch reaches only through the stem."""

    def __init__(self, sets: dict[str, torch.Tensor], layers: Optional[tuple[int, ...]]):
        self.sets = {k: v.float() for k, v in sets.items()}  # name -> (B, N) token mask
        self.layers = layers
        self.mass: dict[str, list[torch.Tensor]] = {k: [] for k in sets}
        self.k_norm: dict[str, list[torch.Tensor]] = {k: [] for k in sets}

    def __call__(self, module, q, k, attn):
        for name, tokens in self.sets.items():
            t = tokens.to(attn.device)
            self.mass[name].append((attn * t[:, None, None, :]).sum(-1).mean((1, 2)))  # (B,)
            self.k_norm[name].append(((k.norm(dim=-1).mean(1) * t).sum(1) / t.sum(1).clamp_min(1)).detach())

    def loss_terms(self) -> torch.Tensor:
        chosen = [m for i, m in enumerate(self.mass["patch"]) if self.layers is None or i in self.layers]
        if not chosen:
            raise QuestbenchError(f"patch attack: layers {self.layers} select none of {len(self.mass['patch'])}")
        return torch.stack(chosen).mean(0)

    def per_layer(self) -> dict[str, torch.Tensor]:
        """{mass_<set>, k_<set>: (B, layers)} on the CPU."""
        out = {}
        for name in self.sets:
            out[f"mass_{name}"] = torch.stack(self.mass[name], 1).detach().cpu()
            out[f"k_{name}"] = torch.stack(self.k_norm[name], 1).cpu()
        return out


def _forward(model, x, sets, layers):
    from ..models.attention import tap_attention
    tap = _AttentionOnTokens(sets, layers)
    with tap_attention(model, tap):
        logits = model(x)
    return logits, tap


def reached_tokens(model: nn.Module, x: torch.Tensor, pix: torch.Tensor, tokens: torch.Tensor, seed: int
                   ) -> torch.Tensor:
    """Token mask (B, N incl. prefix) of the tokens outside the patch whose embedding changes when the patch
    pixels change: the stem's receptive field (a conv stem's 7 px field at stride 4 reaches up to 3 x 3 tokens
    from a 4 px patch). Found by perturbation, the union over two seeded random fills, so it holds for any
    stem."""
    net = getattr(model, "model", model)
    net = getattr(net, "net", net)
    embed = getattr(net, "patch_embed", None)
    if embed is None:
        return torch.zeros_like(tokens)
    seen: list[torch.Tensor] = []
    handle = embed.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    try:
        with torch.no_grad():
            model(x)
            for k in range(2):
                with seeded(derive_seed(seed, "reach", k), str(x.device)):
                    model(torch.where(pix, torch.rand_like(x), x))
    finally:
        handle.remove()
    base = seen[0].flatten(1, -2) if seen[0].ndim > 3 else seen[0]
    changed = torch.zeros(base.shape[:2], dtype=torch.bool, device=base.device)
    for other in seen[1:]:
        o = other.flatten(1, -2) if other.ndim > 3 else other
        changed |= (o - base).abs().amax(-1) > 0
    prefix = tokens.shape[1] - changed.shape[1]
    changed = torch.cat([torch.zeros(len(changed), prefix, dtype=torch.bool), changed.cpu()], 1)
    return changed & ~tokens


STATS = ("mass_patch", "k_patch", "mass_reached", "k_reached")


def attack_patch_batch(model: nn.Module, cfg: PatchConfig, x: torch.Tensor, y: torch.Tensor, sample_ids,
                       seed: int, images: Optional[list] = None) -> list[dict[str, Any]]:
    """One record per sample: robust outcome, the step of first success, and the attention on the patch tokens
    and on the tokens the patch reaches through the stem, clean and attacked.

    Every iterate is checked (the random start is step 0, the iterate after t signed steps is step t): a
    sample fooled at any step of any restart stays fooled; its attacked attention statistics are those of the
    final iterate of the restart that decided it (the first that fooled it, else the last).
    ``first_success_step`` is the fewest steps that fooled it over all restarts, so robust accuracy at fewer
    steps can be read off the records. Each restart's start and positions depend on the seed, the sample and
    the restart index only - not on the step or restart count - so a run with more steps or restarts repeats
    this one's trajectories and can only fool more samples. ``images``, if given, receives each restart's final iterate (for inspection and tests)."""
    gh, gw, px, prefix = token_grid(model.model if isinstance(model, PrecisionWrapper) else model, x.shape[-2:])
    with torch.no_grad():
        clean_logits = model(x)
    clean_pred = predictions(clean_logits)
    y_cpu = y.cpu()
    n_layers = sum(1 for m in model.modules() if hasattr(m, "qkv") and hasattr(m, "num_heads"))
    zeros = torch.zeros(len(x), n_layers)
    best = {"fooled": torch.zeros(len(x), dtype=torch.bool), "pred": clean_pred.cpu().clone(),
            "first_step": torch.full((len(x),), -1, dtype=torch.long),
            **{f"{k}_{w}": zeros.clone() for k in STATS for w in ("clean", "adv")}}
    if cfg.patches == 0:  # the sweep's clean anchor: nothing to optimize
        return _records(best, y_cpu, clean_pred, sample_ids)
    for trial in range(cfg.restarts):
        tiles = [patch_tiles(cfg, gh, gw, sid, seed, trial) for sid in sample_ids]
        pix, tokens = _masks(cfg, tiles, gh, gw, px, prefix, tuple(x.shape))
        pix = pix.to(x.device)
        sets = {"patch": tokens, "reached": reached_tokens(model, x, pix, tokens, derive_seed(seed, trial))}
        with torch.no_grad():
            clean_stats = _forward(model, x, sets, cfg.layers)[1].per_layer()
        with seeded(derive_seed(seed, cfg.trajectory_key, "init", trial, sample_ids[0]), str(x.device)):
            content = torch.rand_like(x)
        # the per-step bookkeeping stays on the device: no step waits for the host (one transfer per restart)
        fooled_here = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        first_here = torch.full((len(x),), -1, dtype=torch.long, device=x.device)
        pred_first = clean_pred.clone()
        nonfinite = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for step in range(cfg.steps + 1):
            last = step == cfg.steps
            content.requires_grad_(not last)
            x_adv = torch.where(pix, content, x)
            # statistics are read at the final iterate; before it the tap gathers only what the loss needs (the
            # explicit attention path runs either way, so the logits are the same as with every statistic on)
            step_sets = sets if last else {"patch": sets["patch"]} if cfg.loss == "attention" else {}
            with torch.set_grad_enabled(not last):
                logits, tap = _forward(model, x_adv, step_sets, cfg.layers)
            flat = logits.detach()
            nonfinite |= ~torch.isfinite(flat).all(1)
            pred = flat.argmax(1)
            now = (pred != y) & ~fooled_here
            fooled_here |= now
            pred_first = torch.where(now, pred, pred_first)
            first_here = torch.where(now, step, first_here)
            if last:  # ``pred`` stays the final iterate's prediction
                break
            objective = F.cross_entropy(logits, y, reduction="sum") if cfg.loss == "ce" else tap.loss_terms().sum()
            grad, = torch.autograd.grad(objective, content)
            content = (content.detach() + cfg.step_at(step) * grad.sign()).clamp_(0, 1)
        if bool(nonfinite.any()):
            raise NonFiniteLogits("the model", int(nonfinite.sum()), len(x))
        fooled_here, first_here, pred_first, pred = (t.cpu() for t in (fooled_here, first_here, pred_first, pred))
        better = (first_here >= 0) & ((best["first_step"] < 0) | (best["first_step"] > first_here))
        best["first_step"] = torch.where(better, first_here, best["first_step"])
        # the record: the first restart that fools a sample (its prediction at the iterate that first fooled
        # it), else the last restart; attention statistics of that restart's final iterate, what the attack's
        # objective reached
        decide = ~best["fooled"] & (fooled_here | torch.tensor(trial == cfg.restarts - 1))
        adv_stats = tap.per_layer()
        best["pred"] = torch.where(decide, torch.where(fooled_here, pred_first, pred), best["pred"])
        for k in STATS:
            best[f"{k}_clean"] = torch.where(decide[:, None], clean_stats[k], best[f"{k}_clean"])
            best[f"{k}_adv"] = torch.where(decide[:, None], adv_stats[k], best[f"{k}_adv"])
        best["fooled"] |= fooled_here
        if images is not None:
            images.append((torch.where(pix, content.detach(), x), pix.clone()))
    return _records(best, y_cpu, clean_pred, sample_ids)


def _records(best, y, clean_pred, sample_ids) -> list[dict[str, Any]]:
    out = []
    clean_pred = clean_pred.cpu()
    names = {"mass_patch": "patch_mass", "k_patch": "patch_k_norm", "mass_reached": "reached_mass",
             "k_reached": "reached_k_norm"}
    for j, sid in enumerate(sample_ids):
        clean_ok = bool(clean_pred[j] == y[j])
        pred = int(best["pred"][j])
        first = int(best["first_step"][j])
        rec = {"sample_id": sid, "label": int(y[j]), "clean_pred": int(clean_pred[j]), "clean_correct": clean_ok,
               "pred": pred, "correct": bool(clean_ok and pred == int(y[j])),
               "first_success_step": first if first >= 0 else None}
        for key, name in names.items():  # mean over layers; the patch tokens' per layer too
            for when in ("clean", "adv"):
                values = best[f"{key}_{when}"][j]
                rec[f"{name}_{when}"] = round(float(values.mean()), 6)
                if key.endswith("patch"):
                    rec[f"{name}_{when}_layers"] = [round(float(v), 6) for v in values]
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
                                      seed)  # positions and starts derive per sample from it
        if on_batch:
            on_batch(len(idx))
    return AttackResult(config=cfg.resolved(), records=records, flags=[])
