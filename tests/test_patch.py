"""Adversarial patches on the token grid: sanity checks against closed forms and the model itself."""
import numpy as np
import pytest
import torch

from conftest import make_tiny
from questbench.data.arrays import ArrayDataset
from questbench.errors import QuestbenchError
from questbench.stats.metrics import sweep_flags
from questbench.evaluators.patch import _masks, attack_patch_batch, evaluate_patch, patch_tiles, token_grid
from questbench.config.settings import PatchConfig
from questbench.config.suite import parse_suite


def _data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return ArrayDataset((rng.random((n, 28, 28)) * 255).astype(np.uint8), rng.integers(0, 10, n), "t", "t")


def test_token_grid_and_masks_cover_exactly_the_chosen_tiles():
    model = make_tiny("standard")  # patch 7 on 28 px: a 4 x 4 grid of 7 px tokens, one class token
    assert token_grid(model, (28, 28)) == (4, 4, 7, 1)
    cfg = PatchConfig(patches=2, size=1, position="fixed")
    tiles = [patch_tiles(cfg, 4, 4, "a", 0, 0)]
    assert tiles == [[0, 1]]
    pix, tok = _masks(cfg, tiles, 4, 4, 7, 1, (1, 1, 28, 28))
    assert int(pix.sum()) == 2 * 7 * 7 and pix[0, 0, :7, :14].all() and not pix[0, 0, 7:].any()
    assert tok.tolist() == [[False, True, True] + [False] * 14]
    random = [patch_tiles(PatchConfig(patches=3), 4, 4, sid, 0, 0) for sid in ("a", "b", "a")]
    assert random[0] == random[2] and len(set(random[0])) == 3  # seeded per sample, distinct tiles
    with pytest.raises(QuestbenchError, match="do not fit"):
        patch_tiles(PatchConfig(patches=17), 4, 4, "a", 0, 0)


def test_zero_patches_is_clean_accuracy_and_pixels_outside_stay_bit_identical():
    model = make_tiny("quest", seed=3)
    ds = _data()
    zero = evaluate_patch(model, ds, PatchConfig(patches=0), batch_size=8)
    with torch.no_grad():
        clean = model(torch.stack([ds[i][0] for i in range(len(ds))])).argmax(1)
    assert [r["pred"] for r in zero.records] == clean.tolist()
    assert [r["correct"] for r in zero.records] == [r["clean_correct"] for r in zero.records]
    # the attacked image: only the patch's pixels may differ from the input
    x = torch.stack([ds[i][0] for i in range(4)])
    images = []
    attack_patch_batch(model, PatchConfig(patches=2, steps=3), x, torch.tensor(ds.labels[:4]), ds.sample_ids[:4], 0,
                       images=images)
    x_adv, pix = images[0]
    mask = pix.expand_as(x_adv)
    assert int(pix.sum()) == 4 * 2 * 7 * 7
    assert torch.equal(x_adv[~mask], x[~mask])  # bit for bit outside the patch
    assert (x_adv[mask] >= 0).all() and (x_adv[mask] <= 1).all() and not torch.equal(x_adv[mask], x[mask])


def test_the_halving_schedule_sets_each_steps_size():
    """Runs of 1 and 2 steps share their start (the schedule depends on the step index, not the count), so the
    second step's move is their difference: step_at(1) = step_size / 2 wherever the clamp did not bite."""
    model = make_tiny("standard", seed=1)
    ds = _data(8)
    x, y = torch.stack([ds[i][0] for i in range(8)]), torch.tensor(ds.labels[:8])
    final = {}
    for steps in (1, 2):
        images = []
        attack_patch_batch(model, PatchConfig(patches=2, steps=steps, step_size=0.4, halve_every=1), x, y,
                           ds.sample_ids[:8], 0, images=images)
        final[steps], pix = images[0]
    inside = pix.expand_as(x)
    move = (final[2] - final[1])[inside].abs()
    free = (final[2][inside] > 0) & (final[2][inside] < 1) & (final[1][inside] > 0) & (final[1][inside] < 1)
    assert free.sum() > 100 and torch.allclose(move[free], torch.full_like(move[free], 0.2), atol=1e-6)


@pytest.mark.parametrize("kind", ["standard", "quest"])
@pytest.mark.slow
def test_attention_loss_raises_attention_on_the_patch(kind):
    """On the built-in 0.48M-parameter ViTs (a random tiny ViT attends almost uniformly whatever its input):
    the attention loss at least doubles the attention on one patch token, the cross-entropy loss does not."""
    import questbench
    model = questbench.load_model(f"fmnist-vit-{kind}-s0")
    ds = questbench.load_dataset("fashion-mnist").subset(range(32))
    mass = {}
    for loss in ("attention", "ce"):
        res = evaluate_patch(model, ds, PatchConfig(patches=1, loss=loss, steps=10), batch_size=32)
        mass[loss] = (np.mean([r["patch_mass_clean"] for r in res.records]),
                      np.mean([r["patch_mass_adv"] for r in res.records]))
        assert all(len(r["patch_mass_adv_layers"]) == 4 for r in res.records)  # four blocks
    assert mass["attention"][1] > 2 * mass["attention"][0], mass
    assert mass["attention"][1] > 1.5 * mass["ce"][1], mass


def test_robust_accuracy_over_patch_counts_is_checked_like_an_eps_sweep():
    assert sweep_flags([(0, 0.8), (1, 0.6), (2, 0.5)], 0.8) == []
    assert sweep_flags([(0, 0.8), (1, 0.5), (2, 0.6)], 0.8)  # rises with the patch count: flagged


def test_patch_suite_keys_validate():
    ok = parse_suite('models = ["m"]\n[[attacks]]\nattack = "patch"\npatches = [0, 1, 2]\nloss = "attention"\n'
                     'layers = [0]\nposition = "worst"\nrestarts = 2\n', "t.toml")
    cfgs = ok.attacks[0].configs
    assert [c.patches for c in cfgs] == [0, 1, 2] and cfgs[1].layers == (0,) and cfgs[1].key.startswith("patch/attention")
    for bad, message in (('patches = 2\neps = 0.1', 'eps: unknown key \\(for attack = "patch"\\)'),
                         ("loss = \"dlr\"\npatches = 1", "loss"),
                         ("steps = 5", "patches: Field required"), ("patches = [1, 1]", "listed twice"),
                         ('patches = 1\nposition = "corner"', "position")):
        with pytest.raises(QuestbenchError, match=message):
            parse_suite(f'models = ["m"]\n[[attacks]]\nattack = "patch"\n{bad}\n', "t.toml")
    for extra in ("patches = 1", "halve_every = 4"):
        with pytest.raises(QuestbenchError, match=r'unknown key \(for attack = "pgd"\)'):
            parse_suite(f'models = ["m"]\n[[attacks]]\nattack = "pgd"\neps = 0.1\n{extra}\n', "t.toml")
    halved = parse_suite('models = ["m"]\n[[attacks]]\nattack = "patch"\npatches = 1\nstep_size = 0.4\n'
                         'halve_every = 3\n', "t.toml").attacks[0].configs[0]
    assert [halved.step_at(t) for t in range(7)] == [0.4, 0.4, 0.4, 0.2, 0.2, 0.2, 0.1]
    assert "halve=3" in halved.key and "halve=3" in halved.trajectory_key
    assert "halve" not in cfgs[1].key  # keys of fixed-step runs are the ones stored before the schedule existed
    assert PatchConfig(patches=1).step_at(100) == 0.1
    with pytest.raises(QuestbenchError, match="halve_every"):
        PatchConfig(patches=1, halve_every=-1)


def test_reached_tokens_are_the_conv_stems_receptive_field():
    """Closed form for the built-in conv stem (3x3 s1 p1, 3x3 s2 p1, 2x2 s2): token row r sees input rows
    4r-2 .. 4r+4, so a one-token patch at (R, C) (rows 4R .. 4R+3) reaches tokens R-1..R+1 x C-1..C+1."""
    import questbench
    from questbench.evaluators.patch import reached_tokens
    model = questbench.load_model("fmnist-vit-quest-s0")
    x = questbench.load_dataset("fashion-mnist").subset(range(2))
    x = torch.stack([x[i][0] for i in range(2)])
    cfg = PatchConfig(patches=1)
    for tile, (R, C) in ((0, (0, 0)), (24, (3, 3)), (13, (1, 6))):
        pix, tok = _masks(cfg, [[tile], [tile]], 7, 7, 4, 1, tuple(x.shape))
        got = reached_tokens(model, x, pix, tok, seed=0)
        expect = torch.zeros(2, 50, dtype=torch.bool)
        for r in range(7):
            for c in range(7):
                rows, cols = range(4 * r - 2, 4 * r + 5), range(4 * c - 2, 4 * c + 5)
                overlaps = any(4 * R <= i < 4 * R + 4 for i in rows) and any(4 * C <= j < 4 * C + 4 for j in cols)
                expect[:, 1 + 7 * r + c] = overlaps and (r, c) != (R, C)
        assert torch.equal(got, expect), tile
        assert int(expect[0].sum()) == {0: 3, 24: 8, 13: 5}[tile]


def _fooled(records):
    return {r["sample_id"] for r in records if r["clean_correct"] and not r["correct"]}


@pytest.mark.parametrize("loss,halve", [("ce", 0), ("attention", 0), ("ce", 2)])
@pytest.mark.slow
def test_more_steps_or_restarts_only_fool_more_and_the_curve_matches_shorter_runs(loss, halve):
    """Best iterate with trajectories that do not depend on the step or restart count: fooled within k steps
    stays fooled at any larger count; robust accuracy at s steps read off the first-success steps of one long
    run equals a run with s steps. A final-iterate attack fails this (a sample fooled mid-way can recover), and
    so would a step schedule that depends on the step count."""
    import questbench
    model = questbench.load_model("fmnist-vit-standard-s1")
    ds = questbench.load_dataset("fashion-mnist").subset(range(48))
    run = {(k, r): evaluate_patch(model, ds, PatchConfig(patches=1, loss=loss, steps=k, restarts=r,
                                                         halve_every=halve), batch_size=48).records for k, r in ((3, 1), (6, 1), (6, 2))}
    assert _fooled(run[3, 1]) <= _fooled(run[6, 1]) <= _fooled(run[6, 2])
    assert len(_fooled(run[6, 2])) > len(_fooled(run[3, 1]))  # the comparison is not vacuous
    from_curve = {r["sample_id"] for r in run[6, 1] if r["clean_correct"]
                  and r["first_success_step"] is not None and r["first_success_step"] <= 3}
    assert from_curve == _fooled(run[3, 1])
    steps = [r["first_success_step"] for r in run[6, 1] if r["clean_correct"] and not r["correct"]]
    assert all(0 <= t <= 6 for t in steps)
    assert all(r["first_success_step"] is None for r in run[6, 1] if r["clean_correct"] and r["correct"])


@pytest.mark.parametrize("loss", ["ce", "attention"])
def test_the_patch_attack_reads_the_device_per_restart_not_per_step(monkeypatch, loss):
    """The per-step bookkeeping (fooled yet, at which step, with which prediction) stays on the device: more steps
    make no more scalar reads, each of which would wait for a GPU."""
    model = make_tiny("quest", seed=3)
    ds = _data()
    reads = {"n": 0}
    for name in ("__int__", "__float__", "__bool__", "item", "tolist", "cpu"):
        real = getattr(torch.Tensor, name)

        def counted(self, *a, _real=real, **k):
            reads["n"] += 1
            return _real(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, counted)
    n = {}
    for steps in (2, 6):
        reads["n"] = 0
        evaluate_patch(model, ds, PatchConfig(patches=1, steps=steps, loss=loss), batch_size=len(ds))
        n[steps] = reads["n"]
    assert n[6] == n[2], n
