"""Settings that are recorded are settings that ran: precision reaches every kind of job, TF32 is scoped to a
job, PGD's DLR loss is Croce & Hein's and enters the attack's identity."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import questbench
from conftest import make_tiny
from questbench.errors import QuestbenchError
from questbench.evaluators.attacks import dlr_loss, pgd_linf
from questbench.evaluators.common import precision_scope, scoped, seeded
from questbench.config.settings import AttackConfig


def _matmul_state():
    return (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
            torch.get_float32_matmul_precision())


@pytest.fixture
def user_settings():
    """A user's own choice, which questbench must hand back unchanged."""
    saved = _matmul_state()
    torch.set_float32_matmul_precision("medium")
    torch.backends.cudnn.allow_tf32 = False
    yield _matmul_state()
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
    torch.set_float32_matmul_precision(saved[2])


def test_precision_scope_sets_tf32_for_a_gpu_job_and_restores_the_callers_state(user_settings):
    with precision_scope("cuda:0"):  # the flags are process state; no GPU is needed to set them
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert _matmul_state() == user_settings
    with pytest.raises(RuntimeError):
        with precision_scope("cuda:0"):
            raise RuntimeError("a failing job")
    assert _matmul_state() == user_settings
    seen = []

    def job():
        for i in range(3):
            seen.append(torch.backends.cudnn.allow_tf32)  # inside a job's step
            yield i

    for _ in scoped(job(), "cuda:0"):
        seen.append(torch.backends.cudnn.allow_tf32)  # the caller, between jobs
    assert seen == [True, False] * 3 and _matmul_state() == user_settings


def test_attack_and_a_run_leave_matmul_precision_as_found(user_settings, tmp_path):
    model = make_tiny("quest")
    x, y = torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,))
    questbench.attack(model, x, y, "pgd", eps=2 / 255, steps=2)
    assert _matmul_state() == user_settings
    questbench.evaluate(model, {"batch_size": 4, "num_workers": 0, "data": {"samples": 4},
                                "attacks": [{"attack": "fgsm", "eps": ["2/255"], "samples": 4}]},
                        out=tmp_path / "r", name="m", device="cpu")
    assert _matmul_state() == user_settings


class AutocastProbe(nn.Module):
    """Records whether each forward ran under bf16 autocast; its logits depend on it, so bf16 changes outcomes."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(28 * 28, 10)
        self.seen: list[bool] = []

    def forward(self, x):
        self.seen.append(torch.is_autocast_enabled("cpu"))
        return self.lin(x.flatten(1)).float()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_precision_reaches_clean_corruption_and_attack_jobs(tmp_path, precision):
    probe = AutocastProbe()
    suite = {"precision": precision, "batch_size": 8, "num_workers": 0, "data": {"samples": 8},
             "corruptions": {"names": ["fog"], "severities": [1], "samples": 8},
             "attacks": [{"attack": "fgsm", "eps": ["2/255"], "samples": 8}]}
    res = questbench.evaluate(probe, suite, out=tmp_path / precision, name="probe", device="cpu",
                              preprocessing={"mean": [0.5], "std": [0.5], "input_size": (1, 28, 28)})
    assert set(res.samples.evaluation) == {"clean", "corruption", "attack"}
    assert probe.seen and all(s == (precision == "bf16") for s in probe.seen)
    assert res.provenance["dtype"] == precision


def test_dlr_loss_matches_pyautoattack_on_random_logits():
    from pyautoattack.autopgd_base import APGDAttack

    torch.manual_seed(0)
    z = torch.randn(64, 10) * 3
    y = torch.randint(0, 10, (64,))
    z[:16, :] = z[:16, :] - 10
    z[torch.arange(16), y[:16]] = 20  # some samples where the true class is the top logit
    ref = APGDAttack.dlr_loss(None, z, y)
    assert torch.allclose(dlr_loss(z, y), ref, atol=1e-6)


def test_pgd_loop_with_ce_is_torchattacks_pgd_and_dlr_is_another_attack():
    import torchattacks

    model = make_tiny("standard")
    model.requires_grad_(False)
    x, y = torch.rand(6, 1, 28, 28), torch.randint(0, 10, (6,))
    with seeded(5):
        ref = torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=4, random_start=True)(x, y)
    with seeded(5):
        ours = pgd_linf(model, x, y, 8 / 255, 2 / 255, 4, True, "ce")
    assert torch.equal(ours, ref)
    with seeded(5):
        dlr = pgd_linf(model, x, y, 8 / 255, 2 / 255, 4, True, "dlr")
    assert not torch.equal(dlr, ref)
    assert (dlr - x).abs().max() <= 8 / 255 + 1e-6 and dlr.min() >= 0 and dlr.max() <= 1


def test_the_loss_is_part_of_the_attack_identity_and_unknown_losses_are_refused():
    ce = AttackConfig("pgd", 2 / 255, steps=5)
    dlr = AttackConfig("pgd", 2 / 255, steps=5, loss="dlr")
    assert ce.key != dlr.key and "loss=dlr" in dlr.key and dlr.resolved()["loss"] == "dlr"
    with pytest.raises(QuestbenchError, match="Linf"):
        AttackConfig("pgd", 0.5, norm="L2", steps=5, loss="dlr")
    with pytest.raises(QuestbenchError, match="own loss"):
        AttackConfig("apgd-ce", 2 / 255, loss="dlr")


def _first_fooling_iterates(model, x, y, eps, alpha, steps):
    """The oracle for stop-at-success: PGD on the whole batch for every step (no image leaves), each image's
    iterates recorded; per image the first iterate the model misclassifies, else the last."""
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    chosen, done = x_adv.clone(), torch.zeros(len(x), dtype=torch.bool)
    for _ in range(steps + 1):
        with torch.no_grad():
            fooled = model(x_adv).argmax(1) != y
        new = fooled & ~done
        chosen[new], done = x_adv[new], done | fooled
        xa = x_adv.clone().requires_grad_(True)
        grad = torch.autograd.grad(nn.functional.cross_entropy(model(xa), y), xa)[0]
        x_adv = (x + (x_adv + alpha * grad.sign() - x).clamp(-eps, eps)).clamp(0, 1)
    return chosen, done


EPS_STOP = 2 / 255


def test_pgd_stop_at_success_keeps_each_images_first_fooling_iterate():
    """Against a whole-batch PGD that records every iterate (float64, so batch size moves no bit that matters):
    fooled images get their first fooling iterate, the others pgd_linf's last; and with no image fooled the loop
    is pgd_linf, hence torchattacks' PGD."""
    from questbench.evaluators.attacks import pgd_linf_until_fooled

    model = make_tiny("standard").double()
    model.requires_grad_(False)
    x = torch.rand(24, 1, 28, 28, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)  # every image classified "correctly" before the attack
    eps, alpha, steps = EPS_STOP, EPS_STOP / 4, 6
    with seeded(3):
        ours = pgd_linf_until_fooled(model, x, y, eps, alpha, steps, True, "ce")
    with seeded(3):
        chosen, fooled = _first_fooling_iterates(model, x, y, eps, alpha, steps)
    with seeded(3):
        last = pgd_linf(model, x, y, eps, alpha, steps, True, "ce")
    assert 0 < int(fooled.sum()) < len(x)  # both kinds of image occur
    assert torch.allclose(ours[fooled], chosen[fooled], atol=1e-12)
    assert torch.allclose(ours[~fooled], last[~fooled], atol=1e-12)
    with torch.no_grad():
        assert (model(ours).argmax(1) != y).equal(fooled)
    assert (ours - x).abs().max() <= eps + 1e-12 and ours.min() >= 0 and ours.max() <= 1
    robust = model(x).argmax(1) == y  # where no image can be fooled within a tiny budget, it is plain PGD
    with seeded(4):
        a = pgd_linf_until_fooled(model, x[robust], y[robust], 1e-4, 1e-5, 3, True, "ce")
    with seeded(4):
        b = pgd_linf(model, x[robust], y[robust], 1e-4, 1e-5, 3, True, "ce")
    assert torch.equal(a, b)


def test_stop_at_success_is_part_of_the_identity_and_pgd_only():
    plain, stop = AttackConfig("pgd", 8 / 255, steps=50), AttackConfig("pgd", 8 / 255, steps=50, stop_at_success=True)
    assert "stop_at_success" not in plain.resolved() and stop.resolved()["stop_at_success"] is True
    assert stop.key == plain.key + "/stop-at-success"
    from questbench.config.labels import attack_label
    assert attack_label(stop.key) == "PGD-50 Linf (step eps/20, stop at success)"
    with pytest.raises(QuestbenchError, match="Linf pgd only"):
        AttackConfig("fgsm", 8 / 255, stop_at_success=True)
