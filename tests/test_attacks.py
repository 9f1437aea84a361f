import numpy as np
import pytest
import torch
import torch.nn as nn

from questbench.data.arrays import ArrayDataset
from questbench.errors import QuestbenchError
from questbench.evaluators.attacks import AttackConfig, evaluate_attack
from questbench.stats.metrics import sweep_flags
from questbench.evaluators.common import derive_seed, run_with_batch_fallback

from conftest import make_tiny


class Linear2(nn.Module):
    """Two-class linear classifier on 4x4 gray images in [0, 1]."""

    def __init__(self, w, b):
        super().__init__()
        self.lin = nn.Linear(16, 2)
        with torch.no_grad():
            self.lin.weight.copy_(w)
            self.lin.bias.copy_(b)

    def forward(self, x):
        return self.lin(x.flatten(1))


@pytest.fixture(scope="module")
def linear_case():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(2, 16, generator=g)
    b = torch.zeros(2)
    model = Linear2(w, b).eval()
    x = 0.3 + 0.4 * torch.rand(400, 1, 4, 4, generator=g)  # inside the box: [0, 1] never binds for eps <= 0.1
    with torch.no_grad():
        y = model(x).argmax(1)
    flip = torch.rand(400, generator=g) < 0.1  # some misclassified samples too
    y = torch.where(flip, 1 - y, y)
    images = (x.squeeze(1).numpy() * 255).round().astype(np.uint8)
    ds = ArrayDataset(images, y.numpy(), "lin", "test")
    return model, ds, w


def analytic_robust(model, ds, w, eps):
    """Optimal L-inf attack on a 2-class linear model: margin minus eps * ||w_y - w_other||_1."""
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.tensor(ds.labels)
    with torch.no_grad():
        logits = model(x)
    margin = logits.gather(1, y.view(-1, 1)).squeeze(1) - logits.gather(1, (1 - y).view(-1, 1)).squeeze(1)
    d = (w[0] - w[1]).abs().sum()
    return float(((margin - eps * d) > 0).float().mean())


@pytest.mark.parametrize("eps", [0.0, 0.01, 0.03, 0.08])
def test_fgsm_and_pgd_reach_the_analytic_robust_accuracy(linear_case, eps):
    model, ds, w = linear_case
    expected = analytic_robust(model, ds, w, eps)
    for cfg in (AttackConfig("fgsm", eps), AttackConfig("pgd", eps, steps=20, random_start=True)):
        res = evaluate_attack(model, ds, cfg, batch_size=128)
        acc = np.mean([r["correct"] for r in res.records])
        assert acc == pytest.approx(expected, abs=1 / len(ds)), cfg
        assert all(r["within_budget"] for r in res.records)
        assert max(r["linf"] for r in res.records) <= eps + 1e-5


@pytest.mark.slow
def test_pgd_not_weaker_than_fgsm_and_within_budget():
    torch.manual_seed(0)
    model = make_tiny("quest", seed=1)
    rng = np.random.default_rng(0)
    ds = ArrayDataset((rng.random((24, 28, 28)) * 255).astype(np.uint8), rng.integers(0, 10, 24), "t", "t")
    with torch.no_grad():  # label with the model's own predictions so clean accuracy is 100%
        ds.labels = model(torch.stack([ds[i][0] for i in range(24)])).argmax(1).numpy()
    points = []
    for eps in (0.0, 0.01, 0.03, 0.1):
        f = evaluate_attack(model, ds, AttackConfig("fgsm", eps), batch_size=8)
        p = evaluate_attack(model, ds, AttackConfig("pgd", eps, steps=10, restarts=2), batch_size=8)
        fa = np.mean([r["correct"] for r in f.records])
        pa = np.mean([r["correct"] for r in p.records])
        assert pa <= fa + 1e-9
        for r in p.records:
            assert r["linf"] <= eps + 1e-5 and r["within_budget"]
        points.append((eps, pa))
    assert points[0][1] == 1.0  # eps = 0 equals clean accuracy
    assert sweep_flags(points, clean_accuracy=1.0) == []


def test_l2_attacks_respect_the_l2_budget():
    model = make_tiny("standard", seed=2)
    rng = np.random.default_rng(1)
    ds = ArrayDataset((rng.random((8, 28, 28)) * 255).astype(np.uint8), rng.integers(0, 10, 8), "t", "t")
    for attack in ("fgsm", "pgd"):
        res = evaluate_attack(model, ds, AttackConfig(attack, 0.5, norm="L2", steps=5))
        assert all(r["l2"] <= 0.5 + 1e-4 for r in res.records)
        assert res.config["norm"] == "L2"


def test_sweep_flags_catch_violations():
    flags = sweep_flags([(0.0, 0.8), (0.01, 0.5), (0.02, 0.6)], clean_accuracy=0.9)
    assert any("rises" in f for f in flags) and any("eps=0" in f for f in flags)


def test_attack_config_records_full_settings_and_validates():
    cfg = AttackConfig("pgd", 1 / 255, steps=20, step_size=0.15 / 255)
    r = cfg.resolved()
    assert r["steps"] == 20 and r["step_size"] == pytest.approx(0.15 / 255) and r["implementation"] == "torchattacks"
    assert AttackConfig("autoattack", 1 / 255).resolved()["steps"] == 100
    assert AttackConfig("autoattack-fast", 1 / 255).resolved()["steps"] == 10
    with pytest.raises(QuestbenchError):
        AttackConfig("cw", 0.1)
    with pytest.raises(QuestbenchError):
        AttackConfig("pgd", 0.1, norm="L1", steps=3)


@pytest.mark.slow
def test_autoattack_matches_direct_pyautoattack():
    from pyautoattack import AutoAttack

    model = make_tiny("quest", seed=3)
    rng = np.random.default_rng(2)
    ds = ArrayDataset((rng.random((6, 28, 28)) * 255).astype(np.uint8), rng.integers(0, 10, 6), "t", "t")
    x = torch.stack([ds[i][0] for i in range(6)])
    with torch.no_grad():
        ds.labels = model(x).argmax(1).numpy()  # all clean-correct, so every sample is attacked
    cfg = AttackConfig("autoattack", 0.3)
    ours = evaluate_attack(model, ds, cfg, seed=0, batch_size=6)
    direct = AutoAttack(model, norm="Linf", eps=0.3, version="standard", seed=derive_seed(0, cfg.key, 0),
                        device="cpu")
    _, y_adv = direct.run_standard_evaluation(x, torch.tensor(ds.labels), batch_size=6)
    assert [r["pred"] for r in ours.records] == y_adv.tolist()
    assert [r["correct"] for r in ours.records] == (y_adv == torch.tensor(ds.labels)).tolist()
    assert ours.config["implementation"] == "pyautoattack" and ours.config["version"] == "standard"


@pytest.mark.parametrize("restarts", [1, 2])
def test_apgd_ce_runs_the_restarts_asked_for_as_direct_pyautoattack(restarts, monkeypatch):
    """APGD-CE's restarts reach the reference (AutoAttack's standard version runs it with 1; APGDAttack's own
    default is 5): per-sample predictions equal a direct pyautoattack run with the same restarts, and the
    restarts pyautoattack was left with are the ones recorded."""
    from pyautoattack import AutoAttack
    from pyautoattack.autopgd_base import APGDAttack

    model = make_tiny("standard", seed=4)
    rng = np.random.default_rng(5)
    ds = ArrayDataset((rng.random((8, 28, 28)) * 255).astype(np.uint8), rng.integers(0, 10, 8), "t", "t")
    x = torch.stack([ds[i][0] for i in range(8)])
    with torch.no_grad():
        ds.labels = model(x).argmax(1).numpy()
    seen = []
    perturb = APGDAttack.perturb
    monkeypatch.setattr(APGDAttack, "perturb", lambda self, *a, **k: (seen.append(self.n_restarts),
                                                                       perturb(self, *a, **k))[1])
    cfg = AttackConfig("apgd-ce", 2 / 255, restarts=restarts)
    ours = evaluate_attack(model, ds, cfg, seed=0, batch_size=8)
    assert seen == [restarts] and ours.config["restarts"] == restarts
    direct = AutoAttack(model, norm="Linf", eps=2 / 255, version="custom", attacks=["apgd-ce"],
                        seed=derive_seed(0, cfg.key, 0), device="cpu")
    direct.apgd.n_restarts = restarts
    _, y_adv = direct.run_standard_evaluation(x, torch.tensor(ds.labels), batch_size=8)
    assert [r["pred"] for r in ours.records] == y_adv.tolist()


def test_apgd_ce_restarts_default_to_the_references_and_name_the_setting():
    assert AttackConfig("apgd-ce", 8 / 255).resolved()["restarts"] == 5  # APGDAttack's default
    assert AttackConfig("apgd-ce", 8 / 255).key == "apgd-ce/Linf/eps=0.0313725"
    one = AttackConfig("apgd-ce", 8 / 255, restarts=1)
    assert one.resolved()["restarts"] == 1 and one.key == "apgd-ce/Linf/eps=0.0313725/restarts=1"
    from questbench.config.labels import attack_label
    assert attack_label(one.key) == "APGD-CE Linf (1 restart)"
    assert attack_label(AttackConfig("apgd-ce", 8 / 255).key) == "APGD-CE Linf"
    assert AttackConfig("pgd", 8 / 255, steps=10).restarts == 1 and AttackConfig("autoattack", 0.1).resolved()[
        "restarts"] == 1


def test_batch_fallback_halves_on_oom():
    seen = []

    def fn(bs):
        seen.append(bs)
        if bs > 16:
            raise RuntimeError("CUDA out of memory. Tried to allocate")
        return bs

    assert run_with_batch_fallback(fn, 128) == 16 and seen == [128, 64, 32, 16]
    with pytest.raises(RuntimeError, match="other"):
        run_with_batch_fallback(lambda bs: (_ for _ in ()).throw(RuntimeError("other")), 8)


def test_restarts_after_the_first_attack_only_what_is_still_robust(monkeypatch):
    """The first restart is the single-restart attack, image for image; each later restart is run on exactly the
    images no earlier restart fooled, and an image is robust only if it survived them all."""
    import questbench.evaluators.attacks as attacks

    model = make_tiny("standard", seed=3)
    rng = np.random.default_rng(2)
    ds = ArrayDataset((rng.random((16, 28, 28)) * 255).astype(np.uint8), rng.integers(0, 10, 16), "t", "t")
    with torch.no_grad():
        ds.labels = model(torch.stack([ds[i][0] for i in range(16)])).argmax(1).numpy()
    eps = 0.043  # fools 4 of the 16
    one = evaluate_attack(model, ds, AttackConfig("pgd", eps, steps=3), batch_size=16)
    sizes, made = [], attacks._torchattacks_attack

    def counting(*args):
        attack = made(*args)
        return lambda x, y: (sizes.append(len(x)), attack(x, y))[1]

    monkeypatch.setattr(attacks, "_torchattacks_attack", counting)
    three = evaluate_attack(model, ds, AttackConfig("pgd", eps, steps=3, restarts=3), batch_size=16)
    still = [r["pred"] == r["label"] for r in one.records]
    assert 0 < sum(still) < len(ds), "the case must leave some images robust and fool others"
    assert sizes[:2] == [len(ds), sum(still)]
    assert len(sizes) <= 3 and sizes == sorted(sizes, reverse=True)
    for a, b in zip(one.records, three.records):
        assert b["correct"] <= a["correct"]  # fooled by the first restart: fooled in the worst case
    assert three.config["restarts_on"] == "robust" and "restarts_on" not in one.config


def test_an_attack_reads_the_device_a_few_times_per_batch_not_per_image(monkeypatch):
    """Records are built from one host transfer per batch: the number of scalar reads (each one a wait for the
    device on a GPU) does not grow with the batch."""
    model = make_tiny("quest", seed=1)
    rng = np.random.default_rng(3)
    ds = ArrayDataset((rng.random((32, 28, 28)) * 255).astype(np.uint8), rng.integers(0, 10, 32), "t", "t")
    reads = {"n": 0}
    for name in ("__int__", "__float__", "__bool__", "item"):
        real = getattr(torch.Tensor, name)

        def counted(self, *a, _real=real):
            reads["n"] += 1
            return _real(self, *a)
        monkeypatch.setattr(torch.Tensor, name, counted)
    per_batch = {}
    for bs in (8, 32):
        reads["n"] = 0
        evaluate_attack(model, ds, AttackConfig("pgd", 0.03, steps=2), batch_size=bs)
        per_batch[bs] = reads["n"] / (len(ds) // bs)
    assert per_batch[32] <= per_batch[8] + 1 and per_batch[32] < 16, per_batch
