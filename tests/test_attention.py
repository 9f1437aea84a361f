import math

import pytest
import timm
import torch

import questbench  # noqa: F401  (registers the timm names)
from questbench.models.attention import (ATTENTION_KINDS, QuestAttention, StandardAttention, attention_kind,
                                  record_attention, set_attention)
from questbench.errors import QuestbenchError

KINDS = list(ATTENTION_KINDS)


def reference(module, x):
    """Explicit float64 formula of each kind, independent of the module's code path."""
    m = module.double()
    x = x.double()
    B, N, C = x.shape
    H, D = m.num_heads, m.head_dim
    qkv = (x @ m.qkv.weight.T + (m.qkv.bias if m.qkv.bias is not None else 0)).reshape(B, N, 3, H, D)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
    unit = lambda t: t / t.norm(dim=-1, keepdim=True)  # noqa: E731
    kind = module.kind
    if kind == "standard":
        logits = q @ k.transpose(-1, -2) / math.sqrt(D)
    elif kind == "quest":
        logits = q @ unit(k).transpose(-1, -2)
    elif kind == "qnorm":
        logits = unit(q) @ k.transpose(-1, -2)
    elif kind == "qknorm_hs":
        logits = m.qk_scale.view(1, H, 1, 1) * (unit(q) @ unit(k).transpose(-1, -2))
    else:
        logits = (unit(q) * m.q_scale.unsqueeze(1)) @ (unit(k) * m.k_scale.unsqueeze(1)).transpose(-1, -2)
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(B, N, H * D)
    return out @ m.proj.weight.T + m.proj.bias


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fused", [True, False])
def test_kind_matches_float64_reference(kind, fused):
    torch.manual_seed(0)
    mod = ATTENTION_KINDS[kind](48, num_heads=4, qkv_bias=True)
    if kind == "qknorm_hs":
        mod.qk_scale.data.uniform_(1, 5)
    if kind == "qknorm_ds":
        mod.q_scale.data.uniform_(0.5, 3)
        mod.k_scale.data.uniform_(0.5, 3)
    mod.fused_attn = fused
    x = torch.randn(2, 9, 48) * 3
    out = mod(x)
    ref = reference(mod, x)
    assert torch.allclose(out.double(), ref, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_finite(kind):
    torch.manual_seed(1)
    mod = ATTENTION_KINDS[kind](32, num_heads=2)
    x = torch.randn(2, 5, 32, requires_grad=True)
    mod(x).square().sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in mod.parameters() if p.grad is not None)


def test_quest_zero_key_is_finite():
    mod = QuestAttention(16, num_heads=2)
    with torch.no_grad():
        mod.qkv.weight.zero_()
    assert torch.isfinite(mod(torch.randn(1, 4, 16))).all()


def test_quest_invariant_to_key_rescaling():
    torch.manual_seed(2)
    mod = QuestAttention(32, num_heads=4)
    q, k, v = (torch.randn(2, 4, 7, 8) for _ in range(3))
    scale = torch.rand(2, 4, 7, 1) * 100 + 0.01
    q1, k1, s1 = mod.transform_qk(q, k)
    q2, k2, s2 = mod.transform_qk(q, k * scale)
    a1 = (s1 * q1 @ k1.transpose(-1, -2)).softmax(-1)
    a2 = (s2 * q2 @ k2.transpose(-1, -2)).softmax(-1)
    assert torch.allclose(a1, a2, atol=1e-6)


def test_quest_logits_bounded_by_query_norm():
    torch.manual_seed(3)
    mod = QuestAttention(32, num_heads=4)
    q, k = torch.randn(2, 4, 7, 8) * 5, torch.randn(2, 4, 7, 8) * 50
    q1, k1, s = mod.transform_qk(q, k)
    logits = s * q1 @ k1.transpose(-1, -2)
    assert (logits.abs() <= q.norm(dim=-1, keepdim=True) * (1 + 1e-5)).all()


def _vit(**kw):
    return timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, num_classes=5, depth=2, **kw).eval()


def test_state_dict_round_trip_standard_quest():
    torch.manual_seed(4)
    std = _vit()
    quest = _vit(attn_layer=QuestAttention)
    assert set(std.state_dict()) == set(quest.state_dict())
    quest.load_state_dict(std.state_dict())
    back = _vit()
    back.load_state_dict(quest.state_dict())
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(back(x), std(x))
    set_attention(back, "quest")
    assert torch.allclose(back(x), quest(x), atol=1e-6)


def test_set_attention_swaps_in_place_and_back():
    torch.manual_seed(5)
    m = _vit()
    x = torch.rand(2, 3, 32, 32)
    before = m(x)
    assert set_attention(m, "qknorm_ds") is m
    assert attention_kind(m) == "qknorm_ds"
    assert "blocks.0.attn.q_scale" in m.state_dict()
    set_attention(m, "standard")
    assert "blocks.0.attn.q_scale" not in m.state_dict()
    assert isinstance(m.blocks[0].attn, StandardAttention)
    assert torch.allclose(m(x), before, atol=1e-6)
    with pytest.raises(QuestbenchError):
        set_attention(m, "nope")


@pytest.mark.parametrize("size", ["tiny", "small"])
@pytest.mark.parametrize("kind", ["quest", "qnorm", "qknorm_hs", "qknorm_ds"])
def test_timm_registered_names_build(size, kind):
    m = timm.create_model(f"vit_{size}_patch16_224_{kind}", num_classes=3, img_size=32, depth=1)
    assert attention_kind(m) == kind


def test_registered_names_cover_all_sizes():
    names = timm.list_models("*_quest")
    for size in ("tiny", "small", "base", "large"):
        assert f"vit_{size}_patch16_224_quest" in names


def test_record_attention_on_fused_model():
    torch.manual_seed(6)
    m = _vit()  # plain timm Attention
    for blk in m.blocks:
        blk.attn.fused_attn = True  # the fused kernel, which hides attention maps from hooks
    x = torch.rand(3, 3, 32, 32)
    expected = m(x)
    seen = {}
    hook = m.blocks[0].norm1.register_forward_hook(lambda mod, inp, out: seen.setdefault("h", out.detach()))
    with record_attention(m) as stats:
        out = m(x)
    hook.remove()
    assert torch.allclose(out, expected, atol=1e-5)
    assert len(stats) == 2 and stats[0].layer == "blocks.0.attn"
    # oracle: the attention of layer 0 computed by hand from its input, softmax(q k^T / sqrt(d))
    attn = m.blocks[0].attn
    b, n, c = seen["h"].shape
    with torch.no_grad():
        qkv = attn.qkv(seen["h"]).reshape(b, n, 3, attn.num_heads, c // attn.num_heads).permute(2, 0, 3, 1, 4)
    p = ((qkv[0] @ qkv[1].transpose(-2, -1)) * attn.head_dim ** -0.5).softmax(-1)
    entropy = -(p * p.clamp_min(1e-12).log()).sum(-1).mean()
    assert stats[0].entropy == pytest.approx(float(entropy), rel=1e-4)
    assert stats[0].max_attention == pytest.approx(float(p.max()), rel=1e-4)
    assert stats[0].k_norm_mean == pytest.approx(float(qkv[1].norm(dim=-1).mean()), rel=1e-4)
    assert 0 < stats[0].entropy <= stats[0].max_entropy + 1e-6
    assert type(m.blocks[0].attn).__name__ == "Attention"  # restored afterwards
    set_attention(m, "quest")
    with record_attention(m) as stats:
        m(x)
    assert stats[0].kind == "quest" and stats[0].k_norm_mean > 0


def test_fast_normalization_matches_reference_with_gradients():
    from questbench.models.attention import _L2Normalize, l2_normalize_reference

    t = torch.randn(3, 2, 5, 8, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(_L2Normalize.apply, (t,))
    g = torch.randn(3, 2, 5, 8, dtype=torch.double)
    a, = torch.autograd.grad(_L2Normalize.apply(t), t, g)
    b, = torch.autograd.grad(l2_normalize_reference(t), t, g)
    assert torch.allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("kind", ["quest", "qnorm"])
@pytest.mark.parametrize("fused", [True, False])
def test_pre_permute_normalization_matches_transform_qk_path(kind, fused):
    torch.manual_seed(2)
    mod = ATTENTION_KINDS[kind](48, num_heads=4, qkv_bias=True)
    mod.fused_attn = fused
    assert mod.normalize_rows  # the fast path is what runs by default
    x = torch.randn(2, 9, 48, requires_grad=True)
    fast = mod(x)
    g_fast, = torch.autograd.grad(fast.sum(), x)
    mod.normalize_rows = ()  # instance override: the general transform_qk path
    slow = mod(x)
    g_slow, = torch.autograd.grad(slow.sum(), x)
    assert torch.allclose(fast, slow, atol=1e-6) and torch.allclose(g_fast, g_slow, atol=1e-5)


@pytest.mark.slow
def test_compiled_normalization_matches_eager_with_gradients():
    """The fused (torch.compile) key normalization gives the eager path's outputs and input gradients; layers
    without a row normalization are left alone."""
    from questbench.models.attention import compile_normalization

    torch.manual_seed(3)
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=10)
    set_attention(model, "quest")
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    eager = model(x)
    g_eager, = torch.autograd.grad(eager.square().sum(), x)
    assert compile_normalization(model) == 2
    assert all(m._qb_l2_normalize is not None for m in model.modules() if isinstance(m, QuestAttention))
    fused = model(x)
    g_fused, = torch.autograd.grad(fused.square().sum(), x)
    assert torch.allclose(eager, fused, atol=1e-5) and torch.allclose(g_eager, g_fused, atol=1e-4)
    std = set_attention(timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2), "standard")
    assert compile_normalization(std) == 0


def test_normalization_is_fused_automatically_only_where_it_pays(monkeypatch):
    """On the CPU the eager path runs; on a CUDA device with Triton the fused kernel is put in automatically (the
    rule itself is tested here with Triton's probe answered both ways; CI has no GPU)."""
    import torch.utils._triton as triton_probe
    from questbench.models.attention import fuse_where_it_pays

    model = set_attention(timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2), "quest")
    assert fuse_where_it_pays(model, "cpu") == 0
    assert all(m.__dict__.get("_qb_l2_normalize") is None for m in model.modules() if isinstance(m, QuestAttention))
    monkeypatch.setattr(triton_probe, "has_triton", lambda: False)
    assert fuse_where_it_pays(model, "cuda:0") == 0
    monkeypatch.setattr(triton_probe, "has_triton", lambda: True)
    assert fuse_where_it_pays(model, "cuda:0") == 2


def test_fused_normalization_falls_back_to_eager_when_it_cannot_compile():
    from questbench.models.attention import _FusedNormalization, l2_normalize_reference

    fused = _FusedNormalization()

    def cannot(t):
        raise RuntimeError("no compiler here")

    fused.compiled = cannot
    t = torch.randn(2, 3, 8)
    with pytest.warns(UserWarning, match="eager path"):
        out = fused(t)
    assert torch.equal(out, l2_normalize_reference(t)) and fused.failed
    assert torch.equal(fused(t), out)  # no second attempt, no second warning


@pytest.mark.slow
def test_compiled_normalization_within_bf16_tolerance_of_eager():
    """In bf16 the fused kernel's rows and gradients agree with the eager formula's to bf16's precision."""
    from questbench.models.attention import _FusedNormalization, _l2_normalize

    torch.manual_seed(4)
    t = torch.randn(4, 17, 3, 32, dtype=torch.bfloat16)
    g = torch.randn_like(t)
    outs = []
    for norm in (_l2_normalize, _FusedNormalization()):
        x = t.clone().requires_grad_(True)
        y = norm(x)
        outs.append((y.float(), torch.autograd.grad(y, x, g)[0].float()))
    (ye, ge), (yf, gf) = outs
    assert (ye - yf).abs().max() <= 2 ** -7 and (ge - gf).abs().max() <= 2 ** -6 * ge.abs().max()
    assert ye.norm(dim=-1).sub(1).abs().max() < 2 ** -6
