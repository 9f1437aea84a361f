"""Adversarial evaluation on models that take [0, 1] images (normalization lives inside the model).

- ``fgsm``, ``pgd``: torchattacks (FGSM / PGD for L-inf; PGDL2 for L2, FGM is PGDL2 with one step of size eps),
  with restarts: the worst case over restarts per sample.
- ``autoattack``: the reference AutoAttack (PyPI ``pyautoattack``), version "standard"; ``apgd-ce`` alone
  through the same code (version "custom"). Its sanity checks (randomness, softmax output, dynamic model,
  number of classes, square-vs-white-box) become flags on the result.
- ``autoattack-fast``: torchattacks' AutoAttack, which runs 10 steps instead of the reference 100. It is not
  the standard AutoAttack and always carries this name.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
import torch.nn as nn

from ..config.settings import AttackConfig
from .common import Spans, batches, derive_seed, frozen, predictions, seeded

BUDGET_TOL = 1e-5


class _SanityLog(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(" ".join(record.getMessage().split()))


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Croce & Hein (2020)'s difference-of-logits-ratio loss per sample (higher = closer to misclassified):
    -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3). Scale-invariant in the logits; needs at least 3 classes."""
    z_sorted, order = logits.sort(dim=1)
    top_is_y = (order[:, -1] == y).float()
    z_y = logits.gather(1, y[:, None])[:, 0]
    best_other = z_sorted[:, -2] * top_is_y + z_sorted[:, -1] * (1.0 - top_is_y)
    return -(z_y - best_other) / (z_sorted[:, -1] - z_sorted[:, -3] + 1e-12)


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "ce": lambda z, y: nn.functional.cross_entropy(z, y),
    "dlr": lambda z, y: dlr_loss(z, y).sum(),
}


def pgd_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int,
             random_start: bool, loss: str) -> torch.Tensor:
    """L-inf PGD (Madry et al.) with a chosen loss: the loop of torchattacks.PGD step for step (uniform start in
    the ball, sign steps of ``alpha``, projection onto the ball and [0, 1]); with ``loss="ce"`` it returns what
    torchattacks.PGD returns under the same seed (tested), with ``"dlr"`` it maximizes the DLR loss instead."""
    objective = LOSSES[loss]
    x = x.clone().detach()
    x_adv = x.clone()
    if random_start:
        x_adv = (x_adv + torch.empty_like(x_adv).uniform_(-eps, eps)).clamp(0, 1).detach()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        grad = torch.autograd.grad(objective(model(x_adv), y), x_adv)[0]
        x_adv = x_adv.detach() + alpha * grad.sign()
        x_adv = (x + (x_adv - x).clamp(-eps, eps)).clamp(0, 1).detach()
    return x_adv


def pgd_linf_until_fooled(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int,
                          random_start: bool, loss: str) -> torch.Tensor:
    """``pgd_linf`` where an image leaves the loop at the first iterate the model misclassifies (the random start
    included) and that iterate is returned for it; the others step on as in ``pgd_linf``. Each image's steps
    depend on its own gradient's sign only, so an image never fooled gets the iterates ``pgd_linf`` gives it (up
    to the float rounding a smaller batch can bring to a near-zero gradient entry), and a fooled one costs no
    further passes: at a large budget most images leave within a step or two."""
    objective = LOSSES[loss]
    x = x.clone().detach()
    x_adv = x.clone()
    if random_start:
        x_adv = (x_adv + torch.empty_like(x_adv).uniform_(-eps, eps)).clamp(0, 1).detach()
    active = torch.arange(len(x), device=x.device)
    for _ in range(steps):
        xa = x_adv[active].requires_grad_(True)
        logits = model(xa)
        going = predictions(logits) == y[active]  # the iterate fools the model where it is not: that one stays
        if not bool(going.any()):
            return x_adv
        grad = torch.autograd.grad(objective(logits[going], y[active][going]), xa)[0][going]
        x0, active = x[active][going], active[going]
        step = xa.detach()[going] + alpha * grad.sign()
        x_adv[active] = (x0 + (step - x0).clamp(-eps, eps)).clamp(0, 1)
    return x_adv


def _torchattacks_attack(model: nn.Module, cfg: AttackConfig, num_classes: int, seed: int):
    import torchattacks

    r = cfg.resolved()
    if cfg.attack == "pgd" and cfg.stop_at_success:
        return lambda x, y: pgd_linf_until_fooled(model, x, y, cfg.eps, r["step_size"], cfg.steps,
                                                  cfg.random_start, cfg.loss)
    if cfg.attack == "pgd" and cfg.loss != "ce":  # torchattacks' PGD has cross-entropy built in
        return lambda x, y: pgd_linf(model, x, y, cfg.eps, r["step_size"], cfg.steps, cfg.random_start, cfg.loss)
    if cfg.attack == "fgsm":
        return torchattacks.FGSM(model, eps=cfg.eps) if cfg.norm == "Linf" else \
            torchattacks.PGDL2(model, eps=cfg.eps, alpha=cfg.eps, steps=1, random_start=False)
    if cfg.attack == "pgd":
        cls = torchattacks.PGD if cfg.norm == "Linf" else torchattacks.PGDL2
        return cls(model, eps=cfg.eps, alpha=r["step_size"], steps=cfg.steps, random_start=cfg.random_start)
    return torchattacks.AutoAttack(model, norm=cfg.norm, eps=cfg.eps, version="standard", n_classes=num_classes,
                                   seed=seed)


def _reference_autoattack(model: nn.Module, cfg: AttackConfig, x: torch.Tensor, y: torch.Tensor, seed: int,
                          device: str, flags: list[str]) -> torch.Tensor:
    from pyautoattack import AutoAttack

    if cfg.attack == "autoattack":
        aa = AutoAttack(model, norm=cfg.norm, eps=cfg.eps, version="standard", seed=seed, device=device)
    else:
        aa = AutoAttack(model, norm=cfg.norm, eps=cfg.eps, version="custom", attacks=["apgd-ce"], seed=seed,
                        device=device)
        aa.apgd.n_restarts = cfg.restarts  # restarts after the first run only on the images still robust
    handler = _SanityLog()
    logger = logging.getLogger("auto-attack")
    logger.addHandler(handler)
    try:
        x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=len(x))
    finally:
        logger.removeHandler(handler)
    flags.extend(f"autoattack-check: {m}" for m in handler.messages)
    return x_adv


def attack_batch(model: nn.Module, cfg: AttackConfig, x: torch.Tensor, y: torch.Tensor, seed: int,
                 num_classes: int, device: str, flags: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (adversarial images, their predictions), worst case over restarts per sample."""
    if cfg.eps == 0:
        with torch.no_grad():
            return x, predictions(model(x))
    if cfg.attack in ("autoattack", "apgd-ce"):
        x_adv = _reference_autoattack(model, cfg, x, y, seed, device, flags)
        with torch.no_grad():
            return x_adv, predictions(model(x_adv))
    best_x, best_pred = x, None
    for restart in range(cfg.restarts):
        # a restart attacks only the images every earlier restart left classified correctly (an image one restart
        # fooled is fooled in the worst case over restarts), so restarts after the first cost what is still robust
        todo = None if best_pred is None else (best_pred == y).nonzero().squeeze(1)
        if todo is not None and len(todo) == 0:
            break
        xs, ys = (x, y) if todo is None else (x[todo], y[todo])
        with seeded(derive_seed(seed, restart), device):
            x_adv = _torchattacks_attack(model, cfg, num_classes, seed)(xs, ys)
        with torch.no_grad():
            pred = predictions(model(x_adv))
        if todo is None:
            best_x, best_pred = x_adv, pred
        else:
            now = pred != ys
            best_x[todo[now]], best_pred[todo[now]] = x_adv[now], pred[now]
    return best_x, best_pred


@dataclass
class AttackResult:
    config: dict[str, Any]
    records: list[dict[str, Any]]
    flags: list[str] = field(default_factory=list)


def evaluate_attack(model: nn.Module, dataset, cfg: AttackConfig, seed: int = 0, batch_size: int = 128,
                    device: str = "cpu", precision: str = "fp32",
                    on_batch: Optional[Callable[[int], None]] = None, spans: Spans = None,
                    source: Optional[nn.Module] = None) -> AttackResult:
    """Attack every sample of ``dataset`` once; one record per sample with clean and robust outcomes. With
    ``source`` the attack is a transfer attack: crafted on ``source`` (same seeds as the white-box run, so the
    same random starts), then evaluated on ``model``."""
    wrapped = frozen(model, precision, device)
    crafter = frozen(source, precision, device) if source is not None else wrapped
    num_classes = None
    records: list[dict[str, Any]] = []
    flags: list[str] = []
    for start, idx, x, y in batches(dataset, batch_size, device, spans):
        with torch.no_grad():
            logits = wrapped(x)
        clean_pred = predictions(logits)
        num_classes = logits.shape[1]  # what the model outputs, not what the dataset says (AutoAttack's targets)
        x_adv, adv_pred = attack_batch(crafter, cfg, x, y, derive_seed(seed, cfg.key, start), num_classes,
                                       device, flags)
        if source is not None:
            with torch.no_grad():
                adv_pred = predictions(wrapped(x_adv))
        delta = (x_adv - x).flatten(1).float()
        linf = delta.abs().amax(1)
        l2 = delta.norm(dim=1)
        used = linf if cfg.norm == "Linf" else l2
        in_box = (x_adv >= 0).flatten(1).all(1) & (x_adv <= 1).flatten(1).all(1)
        within = (used <= cfg.eps + BUDGET_TOL) & in_box
        robust = (adv_pred == y) & (clean_pred == y)
        # one transfer to the host per batch (on a GPU, per-element reads would each wait for the device)
        cols = zip(y.tolist(), clean_pred.tolist(), adv_pred.tolist(), robust.tolist(), linf.tolist(), l2.tolist(),
                   within.tolist())
        records.extend({"sample_id": dataset.sample_ids[i], "label": lab, "clean_pred": cp, "clean_correct": cp == lab,
                        "pred": ap, "correct": rob, "linf": li, "l2": l2_, "within_budget": w}
                       for i, (lab, cp, ap, rob, li, l2_, w) in zip(idx, cols))
        if not bool(within.all()):
            flags.append(f"{int((~within).sum())} perturbation(s) outside the {cfg.norm} budget or [0, 1]")
        if on_batch:
            on_batch(len(idx))
    return AttackResult(config=cfg.resolved(), records=records, flags=sorted(set(flags)))
