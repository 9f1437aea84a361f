"""Checks that say when an attack result cannot be trusted (Carlini et al. 2019, "On Evaluating Adversarial
Robustness"; AutoAttack's flags; RobustBench's checks), per model, from the per-sample records (no torch).

Each check sets a challenger against the attack whose number is reported, on the same samples: a flag needs the
challenger to leave fewer samples robust with an exact McNemar p below ``ALPHA`` (for the large budget: more
than ``LARGE_EPS_MAX`` of the samples left robust):

- one-step: FGSM leaves fewer samples robust than PGD at the same norm and eps (the suite's own sweeps);
- AutoAttack: AutoAttack (or the reference APGD-CE alone) leaves more samples robust than PGD at the same norm
  and eps;
- steps: PGD with many steps and restarts leaves fewer samples robust than the short PGD the suite reports,
  so the short one had not converged ([checks]: pgd-short vs pgd-long);
- large budget: robust accuracy does not reach ~0 at a budget that can turn any image into another
  ([checks]: large-eps);
- transfer: PGD crafted on the pair's other model leaves fewer samples robust than white-box PGD on the model
  itself, a sign that the white-box gradients are masked ([checks]: transfer vs pgd-short).
"""
from __future__ import annotations

from typing import Iterator, Optional

import numpy as np
import pandas as pd

from ..stats.metrics import mcnemar

ALPHA = 0.01
LARGE_EPS_MAX = 0.01  # a fraction of the samples: more left robust at the large budget is flagged
LARGE_EPS = 64 / 255  # an L-inf budget that can turn any image into another: any attack result at or above it
POOLED_MIN_MODELS = 5  # the steps check pooled over a study's models (sign test) needs at least this many

# (reported attack, challenger, check name, what it means when the challenger leaves fewer samples robust)
ATTACK_ORDER = (("pgd", "fgsm", "one-step", "a one-step attack (FGSM) is stronger than the iterative one (PGD)"),
                ("autoattack", "pgd", "autoattack", "AutoAttack is weaker than PGD"),
                ("apgd-ce", "pgd", "autoattack", "APGD-CE is weaker than PGD: it had not converged"))
CHECK_ORDER = (("pgd-short", "pgd-long", "steps", "PGD with more steps and restarts is stronger than the short "
                "PGD: the short one had not converged"),
               ("pgd-short", "transfer", "transfer", "a transfer attack from the pair's other model is stronger "
                "than white-box PGD: gradient masking"))
COLUMNS = ("one-step", "autoattack", "steps", "large budget", "transfer")


def check_name(setting: str) -> str:
    """'check:pgd-long/pgd/Linf/...' -> 'pgd-long'."""
    return setting.split("/")[0].removeprefix("check:")


def _outcomes(g: pd.DataFrame) -> pd.Series:
    return g.drop_duplicates("sample_id").set_index("sample_id").correct.astype(bool)


def _compare(reported: pd.Series, challenger: pd.Series) -> dict:
    """The challenger against the reported attack on their shared samples."""
    shared = reported.index.intersection(challenger.index)
    r_ok, c_ok = reported.loc[shared].to_numpy(bool), challenger.loc[shared].to_numpy(bool)
    p = mcnemar(r_ok, c_ok)["p_value"] if len(shared) else 1.0
    return {"n": len(shared), "reported": 100 * r_ok.mean() if len(shared) else np.nan,
            "challenger": 100 * c_ok.mean() if len(shared) else np.nan, "p": p,
            "flag": bool(len(shared) and c_ok.sum() < r_ok.sum() and p < ALPHA)}


def _checks(samples: pd.DataFrame) -> Iterator[tuple[str, str, str, dict]]:
    """(model, check, context, result) for every check the records allow."""
    if samples.empty or "attack" not in samples:
        return
    att = samples[(samples.evaluation == "attack") & (samples.eps > 0) & (samples.norm != "patch")]
    for (model, norm, eps), g in att.groupby(["model", "norm", "eps"], sort=True):
        by = {a: _outcomes(x) for a, x in g.groupby("attack")}
        for reported, challenger, name, what in ATTACK_ORDER:
            if reported in by and challenger in by:
                yield model, name, f"{norm} eps={eps:.6g}", {**_compare(by[reported], by[challenger]), "what": what,
                                                              "eps": eps}
    # the large-budget check on the data, not on a config: every L-inf sweep result at or above LARGE_EPS
    # (FGSM or PGD leaving images robust there is masking; [checks] only adds the run when a suite has none)
    big = att[(att.norm == "Linf") & (att.eps >= LARGE_EPS - 1e-9)]
    for (model, attack, eps), g in big.groupby(["model", "attack", "eps"], sort=True):
        ok = _outcomes(g).to_numpy(bool)
        yield model, "large budget", f"{attack} Linf eps={eps:.6g}", {
            "n": len(ok), "robust": 100 * ok.mean(), "flag": bool(ok.mean() > LARGE_EPS_MAX), "eps": eps,
            "what": f"{attack} leaves images robust at a large budget (> {100 * LARGE_EPS_MAX:g}% left)"}
    chk = samples[samples.evaluation == "check"]
    for model, g in chk.groupby("model", sort=True):
        by = {check_name(s): _outcomes(x) for s, x in g.groupby("setting")}
        eps = {check_name(s): float(x.eps.iloc[0]) for s, x in g.groupby("setting")}
        for reported, challenger, name, what in CHECK_ORDER:
            if reported in by and challenger in by:
                yield model, name, f"Linf eps={eps[reported]:.6g}", {**_compare(by[reported], by[challenger]),
                                                                      "what": what, "eps": eps[reported]}
        if "large-eps" in by:
            ok = by["large-eps"].to_numpy(bool)
            robust = 100 * ok.mean()
            yield model, "large budget", f"Linf eps={eps['large-eps']:.6g}", {
                "n": len(ok), "robust": robust, "flag": bool(ok.mean() > LARGE_EPS_MAX), "eps": eps["large-eps"],
                "what": f"robust accuracy does not reach ~0 at a large budget (> {100 * LARGE_EPS_MAX:g}% left)"}


def _sentence(model: str, name: str, context: str, r: dict) -> str:
    if name == "large budget":
        return f"{model} {context}: {r['what']}: {r['robust']:.1f}% of {r['n']} samples stay robust"
    return (f"{model} {context}: {r['what']} on the same {r['n']} samples ({r['challenger']:.1f}% vs "
            f"{r['reported']:.1f}% robust, McNemar p = {r['p']:.2g})")


def min_detectable_gap_pp(n: int, alpha: float = ALPHA) -> float:
    """The smallest gap in robust accuracy (pp) a comparison on ``n`` samples can flag at all: every discordant
    sample on the challenger's side, d of them, gives the exact McNemar p = 2 / 2**d, so a flag needs d with
    2 / 2**d < alpha (8 at alpha 0.01), a gap of d / n."""
    d = 1
    while 2.0 / 2 ** d >= alpha:
        d += 1
    return 100.0 * d / n if n else float("inf")


POOLED = {"steps": "PGD with more steps and restarts leaves fewer samples robust than the short PGD",
          "autoattack": "PGD leaves fewer samples robust than the reference attack (AutoAttack or APGD-CE)"}
POOLED_MEANING = {"steps": "the short PGD had not converged", "autoattack": "the reference attack had not converged"}


def pooled(found: list[tuple[str, str, str, dict]], check: str) -> Optional[dict]:
    """A comparison check pooled over models: in how many models the challenger leaves fewer samples robust than
    the reported attack, against how many it leaves more, with an exact sign test. Each model's own check lacks
    power at 100 images; a study's models together do not (issue 38). One result per model and eps counts."""
    from scipy.stats import binomtest

    rows = [r for _, name, _, r in found if name == check and r["n"]]
    if len(rows) < POOLED_MIN_MODELS:
        return None
    fewer = sum(r["challenger"] < r["reported"] for r in rows)
    more = sum(r["challenger"] > r["reported"] for r in rows)
    p = binomtest(fewer, fewer + more, 0.5).pvalue if fewer + more else 1.0
    gap = float(np.mean([r["reported"] - r["challenger"] for r in rows]))
    return {"check": check, "models": len(rows), "fewer": fewer, "more": more, "p": float(p), "gap": gap,
            "flag": bool(fewer > more and p < ALPHA)}



def pooled_sentence(result: dict) -> str:
    """A pooled check in words, with its counts and p whether it flags or passes."""
    counts = (f"{POOLED[result['check']]} in {result['fewer']} of {result['models']} comparisons and more in "
              f"{result['more']} (sign test p = {result['p']:.2g}; {result['gap']:.1f} pp on average)")
    if result["flag"]:
        return f"all models: {counts}: {POOLED_MEANING[result['check']]}"
    verdict = "not flagged (a flag needs more fewer than more and p < 0.01)" if result["fewer"] > result["more"] \
        else "no sign of it"
    return f"Pooled over the models, {counts}: {verdict}."


def check_flags(samples: pd.DataFrame) -> list[str]:
    """One sentence per failed check."""
    checks = checks_table(samples)
    return flag_sentences(checks)


def flag_sentences(checks: Optional[tuple[pd.DataFrame, list[dict]]]) -> list[str]:
    """The sentences of the failed checks in ``checks_table``'s result."""
    return [r["sentence"] for r in (checks[1] if checks is not None else []) if r["flag"]]


def _cell(name: str, r: dict) -> str:
    from ..config.labels import eps_label
    return f"{eps_label(r['eps'])}: " + _outcome(name, r)


def _outcome(name: str, r: dict) -> str:
    if name == "large budget":
        text = f"{r['robust']:.1f}%"
    else:
        text = f"{r['reported']:.1f} / {r['challenger']:.1f}"
    return text + (" FLAG" if r["flag"] else " ok")


def checks_table(samples: pd.DataFrame) -> Optional[tuple[pd.DataFrame, list[dict]]]:
    """(one row per model with a cell per check, the long rows for the csv), or None without any check."""
    found = list(_checks(samples))
    if not found:
        return None
    attention = samples.groupby("model").attention.first()
    rows: dict[str, dict] = {}
    long = []
    for model, name, context, r in found:
        row = rows.setdefault(model, {"model": model, "attention": attention.get(model, ""),
                                      **{c: "-" for c in COLUMNS}, "flags": 0})
        cell = _cell(name, r)
        row[name] = cell if row[name] == "-" else f"{row[name]}; {cell}"
        row["flags"] += int(r["flag"])
        long.append({"model": model, "attention": attention.get(model, ""), "check": name, "setting": context,
                     "n": r["n"], "accuracy_pct": r.get("robust", r.get("challenger")),
                     "baseline_accuracy_pct": r.get("reported"), "p_value": r.get("p"), "flag": r["flag"],
                     "sentence": _sentence(model, name, context, r)})
    for check in POOLED:
        result = pooled(found, check)
        if result is not None:
            long.append({"model": "(all models)", "attention": "", "check": f"{check} (pooled)",
                         "setting": f"{result['models']} comparisons", "n": result["models"],
                         "accuracy_pct": None, "baseline_accuracy_pct": None, "p_value": result["p"],
                         "flag": result["flag"], "sentence": pooled_sentence(result)})
    df = pd.DataFrame(list(rows.values()))
    df = df[["model", "attention"] + [c for c in COLUMNS if (df[c] != "-").any()] + ["flags"]]
    return df, long


CHECK_NOTES = [
    "Each cell: robust accuracy (%) of the attack whose number is reported, then of its challenger, on the same "
    "samples, and whether the check passed. one-step: PGD / FGSM at the same eps (FLAG when FGSM leaves fewer "
    "robust); autoattack: AutoAttack / PGD (FLAG when PGD leaves fewer robust); steps: PGD-short / "
    "PGD with more steps and restarts (FLAG when the longer one leaves fewer robust: the short PGD had not "
    "converged); large budget: robust accuracy at the large eps (FLAG above "
    f"{100 * LARGE_EPS_MAX:g}%); transfer: white-box PGD-short / PGD crafted on the pair's other model (FLAG when "
    "the transfer attack leaves fewer robust: masked gradients). A comparison flags only when its exact McNemar "
    f"p < {ALPHA:g}. A flagged model's robust accuracies are upper bounds that an attack did not reach. "
    "Challengers run with stop_at_success ([checks]) count an image fooled at the first iterate that fools the "
    "model, not only at the last."]
