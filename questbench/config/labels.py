"""Settings as people write them: 8/255, PGD-10, fog severity 3."""
from __future__ import annotations

import re

ATTACK_NAMES = {"fgsm": "FGSM", "pgd": "PGD", "autoattack": "AutoAttack", "apgd-ce": "APGD-CE",
                "autoattack-fast": "AutoAttack-fast (10 steps)"}


def eps_label(eps: float) -> str:
    k = float(eps) * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else f"{float(eps):.4g}"


def budget_label(attack: str, budget: float) -> str:
    """A sweep point as people write it: 8/255 for norm-bounded attacks, '2 patches' for patch attacks."""
    if attack == "patch":
        k = int(budget)
        return f"{k} patch" if k == 1 else f"{k} patches"
    return eps_label(budget)


def attack_family(setting: str) -> str:
    """The sweep a setting key belongs to: the key without its eps part."""
    return re.sub(r"/eps=[^/]*", "", setting)


def attack_label(setting: str) -> str:
    """'pgd/Linf/eps=0.0313725/steps=10/alpha=0.00784314/restarts=1' -> 'PGD-10 Linf (step eps/4)'."""
    parts = setting.split("/")
    attack, norm = parts[0], parts[1] if len(parts) > 1 else ""
    fields = dict(p.split("=", 1) for p in parts[2:] if "=" in p)
    if attack == "patch":  # 'patch/attention/patches=2/size=1/...' -> 'Patch (attention loss)'
        size = fields.get("size", "1")
        extra = [] if size == "1" else [f"{size}x{size} tokens"]
        extra += [f"{fields['pos']} position"] if fields.get("pos", "random") != "random" else []
        return f"Patch ({norm} loss" + "".join(f", {e}" for e in extra) + ")"
    name = ATTACK_NAMES.get(attack, attack)
    if attack == "pgd":
        name = f"PGD-{fields.get('steps', '?')}"
        eps, alpha = float(fields.get("eps", 0)), float(fields.get("alpha", 0))
        extra = []
        if eps > 0 and alpha > 0:
            ratio = alpha / eps
            inv = 1 / ratio
            extra.append(f"step eps/{inv:.3g}" if abs(inv - round(inv)) < 1e-3 else f"step {ratio:.3g} eps")
        if fields.get("restarts", "1") != "1":
            extra.append(f"{fields['restarts']} restarts")
        if "no-random-start" in parts:
            extra.append("no random start")
        if "stop-at-success" in parts:
            extra.append("stop at success")
        return f"{name} {norm}" + (f" ({', '.join(extra)})" if extra else "")
    if attack == "apgd-ce" and "restarts" in fields:  # named only when not the reference's own 5
        n = fields["restarts"]
        return f"{name} {norm} ({n} restart{'' if n == '1' else 's'})"
    return f"{name} {norm}"


def corruption_label(corruption: str, severity: int) -> str:
    return f"{corruption} severity {int(severity)}"
