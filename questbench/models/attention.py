"""The QUEST attention family as drop-in subclasses of timm's ``Attention``.

Every kind keeps timm's parameter names (``qkv``, ``proj``, ...), so a standard checkpoint loads into a
QUEST model and back. Kinds differ only in how queries and keys are transformed before the dot product
and in the logit scale:

=========== ======================================== ============================================
kind        logits                                    extra parameters
=========== ======================================== ============================================
standard    q k^T / sqrt(d)                           none (timm's own formula)
quest       q normalize(k)^T                          none; keys L2-normalized per head, scale 1
qnorm       normalize(q) k^T                          none; queries normalized, scale 1
qknorm_hs   s_h * normalize(q) normalize(k)^T         ``qk_scale`` (heads,), init sqrt(d)
qknorm_ds   (g_q * normalize(q)) (g_k * normalize(k))^T  ``q_scale``, ``k_scale`` (heads, d), init d^(1/4)
=========== ======================================== ============================================

Initial scales: with unit-variance features, standard attention's logits q.k/sqrt(d) have std 1; for unit
vectors the cosine has std 1/sqrt(d), so a logit scale of sqrt(d) (HS), or d^(1/4) on each side (DS),
starts the normalized variants at the same logit spread as standard attention.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Attention

from ..errors import QuestbenchError
from ..config.settings import ATTENTION_NAMES

NORM_EPS = 1e-6  # guards against an all-zero key (or query) vector


class _L2Normalize(torch.autograd.Function):
    """t / sqrt(|t|^2 + eps^2) over the last dim with a hand-written backward.

    Autograd through the plain formula saves and replays five elementwise ops; this saves (y, 1/|t|) and its
    backward is grad = (g - y <g, y>) / |t|: fewer passes over the key tensor, which is what QUEST adds to
    standard attention's cost.
    """

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        inv = torch.rsqrt(t.square().sum(-1, keepdim=True).add_(NORM_EPS * NORM_EPS))
        y = t * inv
        ctx.save_for_backward(y, inv)
        return y

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        y, inv = ctx.saved_tensors
        # g - y <g, y> as one addcmul pass instead of a product and a subtraction (bench/attention_speed.py)
        return torch.addcmul(g, y, (g * y).sum(-1, keepdim=True), value=-1).mul_(inv)


def l2_normalize_reference(t: torch.Tensor) -> torch.Tensor:
    """The plain eager formula (always correct; used where autograd.Function is unwanted, e.g. double backward)."""
    return t * torch.rsqrt(t.pow(2).sum(-1, keepdim=True) + NORM_EPS * NORM_EPS)


def _l2_normalize(t: torch.Tensor) -> torch.Tensor:
    if torch.is_grad_enabled() and t.requires_grad and not torch.jit.is_scripting():
        return _L2Normalize.apply(t)
    return l2_normalize_reference(t)


@dataclass
class AttentionStats:
    """Per-layer statistics recorded by :func:`record_attention` (means over batch, heads and tokens)."""

    layer: str
    kind: str
    entropy: float  # nats, mean over queries
    max_entropy: float  # log(N): entropy of uniform attention
    q_norm_mean: float
    q_norm_max: float
    k_norm_mean: float
    k_norm_std: float
    k_norm_max: float
    max_attention: float  # largest attention weight seen (collapse indicator)


class QuestbenchAttention(Attention):
    """timm ``Attention`` with a hook for the query/key transform and optional diagnostics."""

    kind = "standard"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_kind_params()

    def _init_kind_params(self) -> None:
        """Create the kind's extra parameters (none by default). Called after a class swap too."""

    # indices into (q, k, v) that the kind L2-normalizes with nothing else applied (scale 1): lets forward
    # normalize before the permute; transform_qk must give the same result (it is the reference path)
    normalize_rows: tuple[int, ...] = ()

    def transform_qk(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Return (q, k, scale) fed to softmax(scale * q k^T)."""
        return q, k, self.scale

    def _plain_qk_norm(self) -> bool:
        return isinstance(self.q_norm, nn.Identity) and isinstance(self.k_norm, nn.Identity)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                is_causal: bool = False) -> torch.Tensor:
        B, N, _ = x.shape
        gate = self.gate(x).sigmoid() if getattr(self, "gate", None) is not None else None
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim)
        recorder = getattr(self, "_qb_recorder", None)
        if self.normalize_rows and recorder is None and self._plain_qk_norm():
            # Normalize in the projection's own (B, N, H, d) layout, before the permute: reading the rows
            # where they were just written saves a strided pass over the key tensor (bench/attention_speed.py).
            norm = getattr(self, "_qb_l2_normalize", None) or _l2_normalize
            q, k, v = (norm(qkv[:, :, i]).transpose(1, 2) if i in self.normalize_rows
                       else qkv[:, :, i].transpose(1, 2) for i in range(3))
            scale = 1.0
            q_raw = k_raw = None
        else:
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
            q_raw, k_raw = self.q_norm(q), self.k_norm(k)
            q, k, scale = self.transform_qk(q_raw, k_raw)
        if self.fused_attn and recorder is None:
            x = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale,
                dropout_p=self.attn_drop.p if self.training else 0.0)
        else:
            attn = (q * scale) @ k.transpose(-2, -1)
            if is_causal:
                attn = attn.masked_fill(torch.ones(N, N, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
            if attn_mask is not None:
                attn = attn.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else attn + attn_mask
            attn = attn.softmax(dim=-1)
            if recorder is not None:
                recorder(self, q_raw, k_raw, attn)
            x = self.attn_drop(attn) @ v
        x = x.transpose(1, 2).reshape(B, N, self.attn_dim)
        x = self.norm(x)
        if gate is not None:
            x = x * gate
        return self.proj_drop(self.proj(x))


class StandardAttention(QuestbenchAttention):
    kind = "standard"


class QuestAttention(QuestbenchAttention):
    """softmax(Q normalize(K)^T) V: each query's norm sets its own sharpness; keys cannot grow to win."""

    kind = "quest"
    normalize_rows = (1,)

    def transform_qk(self, q, k):
        return q, _l2_normalize(k), 1.0


class QNormAttention(QuestbenchAttention):
    kind = "qnorm"
    normalize_rows = (0,)

    def transform_qk(self, q, k):
        return _l2_normalize(q), k, 1.0


class QKNormHSAttention(QuestbenchAttention):
    kind = "qknorm_hs"

    def _init_kind_params(self) -> None:
        ref = self.qkv.weight
        self.qk_scale = nn.Parameter(torch.full((self.num_heads,), math.sqrt(self.head_dim),
                                                device=ref.device, dtype=ref.dtype))

    def transform_qk(self, q, k):
        q = _l2_normalize(q) * self.qk_scale.view(1, -1, 1, 1)
        return q, _l2_normalize(k), 1.0


class QKNormDSAttention(QuestbenchAttention):
    kind = "qknorm_ds"

    def _init_kind_params(self) -> None:
        ref = self.qkv.weight
        init = self.head_dim ** 0.25
        shape = (self.num_heads, self.head_dim)
        self.q_scale = nn.Parameter(torch.full(shape, init, device=ref.device, dtype=ref.dtype))
        self.k_scale = nn.Parameter(torch.full(shape, init, device=ref.device, dtype=ref.dtype))

    def transform_qk(self, q, k):
        q = _l2_normalize(q) * self.q_scale.unsqueeze(1)
        k = _l2_normalize(k) * self.k_scale.unsqueeze(1)
        return q, k, 1.0


ATTENTION_KINDS: dict[str, type[QuestbenchAttention]] = {
    cls.kind: cls for cls in (StandardAttention, QuestAttention, QNormAttention, QKNormHSAttention, QKNormDSAttention)
}
assert tuple(ATTENTION_KINDS) == ATTENTION_NAMES, "settings.ATTENTION_NAMES must list the same kinds"
_KIND_PARAMS = ("qk_scale", "q_scale", "k_scale")


def attention_class(kind: str) -> type[QuestbenchAttention]:
    try:
        return ATTENTION_KINDS[kind]
    except KeyError:
        raise QuestbenchError(f"unknown attention kind {kind!r}; known: {', '.join(ATTENTION_KINDS)}") from None


def set_attention(model: nn.Module, kind: str) -> nn.Module:
    """Swap every timm ``Attention`` module of ``model`` to ``kind`` in place, keeping its weights."""
    cls = attention_class(kind)
    swapped = 0
    for module in model.modules():
        if isinstance(module, Attention):
            for name in _KIND_PARAMS:
                if name in module._parameters:
                    del module._parameters[name]
            module.__class__ = cls
            module._init_kind_params()
            swapped += 1
    if swapped == 0:
        raise QuestbenchError(f"{type(model).__name__} has no timm Attention modules to swap")
    return model


class _FusedNormalization:
    """The row normalization as one generated kernel (``torch.compile`` of the eager formula: on a GPU one pass over
    the keys where the qkv projection wrote them, forward and backward), falling back to the eager path for good,
    with one warning, if compiling fails (no compiler or Triton where it runs)."""

    def __init__(self):
        self.compiled = torch.compile(l2_normalize_reference)
        self.failed = False

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        if not self.failed:
            try:
                return self.compiled(t)
            except Exception as exc:  # a backend that cannot compile here: the eager path gives the same rows
                self.failed = True
                warnings.warn(f"fused key normalization unavailable ({type(exc).__name__}); using the eager path")
        return _l2_normalize(t)


def compile_normalization(model: nn.Module) -> int:
    """Fuse each normalizing layer's row normalization into one generated kernel (:class:`_FusedNormalization`).
    The eager path stays the always-correct fallback: layers keep it until this is called. Returns how many
    layers were changed. The first call of each shape compiles (seconds)."""
    fused = _FusedNormalization()
    n = 0
    for m in model.modules():
        if isinstance(m, QuestbenchAttention) and m.normalize_rows:
            m._qb_l2_normalize = fused
            n += 1
    return n


def fuse_where_it_pays(model: nn.Module, device: str) -> int:
    """Fuse the row normalization automatically where a run is long enough for the compile (seconds) to pay and
    the compiler is there: a CUDA device with Triton. Elsewhere (the CPU, where a default run is minutes and the
    fused kernel would spend its saving compiling each batch shape) the eager path runs. Returns the layers fused."""
    if not str(device).startswith("cuda"):
        return 0
    from torch.utils._triton import has_triton

    return compile_normalization(model) if has_triton() else 0


def attention_kind(model: nn.Module) -> str:
    kinds = {getattr(m, "kind", "standard") for m in model.modules() if isinstance(m, Attention)}
    if len(kinds) != 1:
        raise QuestbenchError(f"model has mixed or no attention kinds: {sorted(kinds)}")
    return kinds.pop()


@contextlib.contextmanager
def tap_attention(model: nn.Module, callback) -> Iterator[None]:
    """Call ``callback(module, q, k, attn)`` from every attention module in the forwards run inside, with the
    projected queries and keys (before the kind's normalization) and the attention weights, gradients intact.

    Works on fused models: while tapped, the modules take the explicit softmax path. Plain timm ``Attention``
    modules are switched to :class:`StandardAttention` (same formula) for the duration."""
    patched: list[tuple[nn.Module, type]] = []
    for m in model.modules():
        if isinstance(m, Attention):
            if not isinstance(m, QuestbenchAttention):
                patched.append((m, m.__class__))
                m.__class__ = StandardAttention
            m._qb_recorder = callback
    try:
        yield
    finally:
        for m in model.modules():
            if isinstance(m, Attention) and "_qb_recorder" in m.__dict__:
                del m._qb_recorder
        for m, cls in patched:
            m.__class__ = cls


@contextlib.contextmanager
def record_attention(model: nn.Module) -> Iterator[list[AttentionStats]]:
    """Record per-layer attention entropy and query/key norm statistics for the forwards run inside.

    Norms are those of the projected queries and keys before the kind's normalization, so a growing
    key norm shows up for every kind (it is what QUEST makes irrelevant to the attention weights).
    """
    stats: list[AttentionStats] = []
    names = {m: n for n, m in model.named_modules()}

    def recorder(module, q, k, attn):
        with torch.no_grad():
            qn = q.float().norm(dim=-1)
            kn = k.float().norm(dim=-1)
            a = attn.float()
            ent = -(a * torch.log(a.clamp_min(1e-12))).sum(-1)
            stats.append(AttentionStats(
                layer=names.get(module, "?"), kind=module.kind, entropy=float(ent.mean()),
                max_entropy=math.log(attn.shape[-1]), q_norm_mean=float(qn.mean()), q_norm_max=float(qn.max()),
                k_norm_mean=float(kn.mean()), k_norm_std=float(kn.std()), k_norm_max=float(kn.max()),
                max_attention=float(a.max())))

    with tap_attention(model, recorder):
        yield stats

