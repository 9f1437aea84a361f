"""Aggregate tables from the per-sample results: the one place the report layer aggregates raw samples (the
renderers only select and format these); nothing here is ever stored."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd

from ..config.corruptions import COMMON_CORRUPTIONS, CORRUPTION_GROUP
from ..stats.metrics import mce, mean_corruption_error, relative_mce, sweep_flags, wilson_interval
from ..kinds import KINDS
from ..store.results import Results
from ..store.schema import Provenance
from .checks import checks_table, flag_sentences
from .compare import RELATIVE, compare_kinds, compare_pairs, compare_seeds, sweep_keys
from ..config.labels import attack_label, budget_label

IMAGENET_DATASETS = ("imagenet", "imagefolder")
# the columns of the corruption table that are not a corruption's error
CORRUPTION_SUMMARY_KEYS = ("model", "attention", "summary", "relative_mce", "relative", "clean_same_images")
CONVERGED_PP = 1.0  # robust accuracy may still fall by less than this from half the steps to all of them


@dataclass
class Tables:
    clean: pd.DataFrame
    corruptions: pd.DataFrame  # one row per model: summary metric + per-corruption error (%)
    severity: pd.DataFrame  # model, corruption, group, severity, accuracy (%)
    attacks: pd.DataFrame  # model, attack, norm, eps, robust accuracy (%), n
    pairs: pd.DataFrame  # compare() rows of every model against its standard sibling
    seeds: pd.DataFrame  # compare_seeds(): mean delta over trained pairs with a pairs x images interval
    flags: list[str] = field(default_factory=list)
    corruption_metric: str = ""
    notes: list[str] = field(default_factory=list)
    checks: Optional[tuple[pd.DataFrame, list[dict]]] = None  # checks.checks_table(): table and csv rows
    shifts: pd.DataFrame = field(default_factory=pd.DataFrame)  # model, attention, setting, n, accuracy (%)
    shift_excluded: int = 0  # ImageNet-ReaL images left out for want of a ReaL label
    patches: pd.DataFrame = field(default_factory=pd.DataFrame)  # patch attacks: robust % and attention, clean/adv
    convergence: pd.DataFrame = field(default_factory=pd.DataFrame)  # patch robust % had the attack stopped early
    mechanism: pd.DataFrame = field(default_factory=pd.DataFrame)  # attention diagnostics per model
    n_diagnostics: int = 0  # images the diagnostics saw
    contrasts: pd.DataFrame = field(default_factory=pd.DataFrame)  # compare_kinds(): kind vs kind, factorial
    study: pd.DataFrame = field(default_factory=pd.DataFrame)  # study_table(): a verdict per contrast x endpoint
    margin_pp: Optional[float] = None  # the study's declared equivalence margin
    interim: Optional[str] = None  # set by whoever renders a study before all its planned models ran: said first
    devices: dict[str, str] = field(default_factory=dict)  # model -> device, when joined folders ran on several
    kinds: dict = field(default_factory=dict)  # kind name -> its aggregate (Kind.aggregate), for its tables and csv


def clean_table(samples: pd.DataFrame) -> pd.DataFrame:
    clean = samples[samples.evaluation == "clean"]
    rows = []
    for model, g in clean.groupby("model", sort=True):
        k, n = int(g.correct.sum()), len(g)
        lo, hi = wilson_interval(k, n)
        rows.append({"model": model, "attention": g.attention.iloc[0], "top1": 100 * k / n, "ci_low": 100 * lo,
                     "ci_high": 100 * hi, "n": n})
    df = pd.DataFrame(rows, columns=["model", "attention", "top1", "ci_low", "ci_high", "n"])
    return df.sort_values(["top1", "model"], ascending=[False, True]).reset_index(drop=True)


def corruption_tables(samples: pd.DataFrame, dataset: str) -> tuple[pd.DataFrame, pd.DataFrame, str, list[str]]:
    corr = samples[samples.evaluation == "corruption"]
    notes: list[str] = []
    if corr.empty:
        return pd.DataFrame(), pd.DataFrame(), "", notes
    grouped = corr.groupby(["model", "corruption", "severity"], sort=True).correct
    sev = pd.DataFrame({"accuracy": grouped.mean() * 100, "n": grouped.size()}).reset_index()
    sev["group"] = sev.corruption.map(CORRUPTION_GROUP)
    imagenet = dataset.lower() in IMAGENET_DATASETS
    clean = samples[samples.evaluation == "clean"]
    rows = []
    errors = {model: {c: [1 - float(gc[gc.severity == s].correct.mean()) if (gc.severity == s).any() else np.nan
                          for s in range(1, 6)] for c, gc in g.groupby("corruption", sort=True)}
              for model, g in corr.groupby("model", sort=True)}
    # one metric for the whole table (a column mixing mCE and unnormalized error could not be ranked): mCE only
    # when every model has all 15 common corruptions at all 5 severities
    # the grid is every (corruption, severity) any model has: a model without one of them (a missing job) gets no
    # aggregate at all, never a mean over the settings it happens to have (issue 36)
    grid = set(zip(sev.corruption, sev.severity))
    complete_models = {m for m, g in sev.groupby("model") if set(zip(g.corruption, g.severity)) >= grid}
    use_mce = imagenet and all((c, s) in grid for c in COMMON_CORRUPTIONS for s in range(1, 6))
    metric = "mCE (%, AlexNet-normalized)" if use_mce else "mean corruption error (%, unnormalized)"
    for model, g in corr.groupby("model", sort=True):
        errs = errors[model]
        row: dict = {"model": model, "attention": g.attention.iloc[0]}
        complete = {c: e for c, e in errs.items() if not np.isnan(e).any()}
        ids = set(g.sample_id)
        cm = clean[(clean.model == model) & clean.sample_id.isin(ids)]
        if use_mce:
            row["summary"] = mce(complete)
            if not cm.empty:
                row["relative_mce"] = relative_mce(complete, 1 - float(cm.correct.mean()))
        else:
            row["summary"] = mean_corruption_error({c: [x for x in e if not np.isnan(x)] for c, e in errs.items()})
        if cm.sample_id.nunique() == len(ids):  # clean outcomes for exactly these images
            row["clean_same_images"] = 100 * float(cm.correct.mean())
            if not use_mce:  # relative error: the mean corruption error minus the clean error on the same images
                row["relative"] = row["summary"] - (100 - row["clean_same_images"])
        for c, e in errs.items():
            row[c] = 100 * float(np.nanmean(e))
        if model not in complete_models:
            row.update({k: np.nan for k in ("summary", "relative_mce", "relative")})
            for c in errs:
                if any((c, s) in grid and np.isnan(errs[c][s - 1]) for s in range(1, 6)):
                    row[c] = np.nan
        rows.append(row)
    if imagenet and metric.startswith("mCE") and corr.sample_id.nunique() < 50000:
        notes.append(f"mCE uses AlexNet's errors on the full 50,000-image validation set; these results cover "
                     f"{corr.sample_id.nunique()} images, so the normalization is approximate.")
    if imagenet and not use_mce:
        notes.append("the results do not hold all 15 common corruptions at 5 severities: mean corruption error "
                     "(unnormalized) instead of mCE.")
    if len(complete_models) < corr.model.nunique():
        notes.append("'missing': a model without every corruption setting the others have (a missing job) gets "
                     "no corruption aggregate; run the suite again into this folder to finish it.")
    if not imagenet:
        notes.append(f"{dataset} has no AlexNet baseline: corruption error is the unnormalized mean error over "
                     "corruptions and severities (not mCE).")
    df = pd.DataFrame(rows).sort_values(["summary", "model"], na_position="last").reset_index(drop=True)
    return df, sev, metric, notes


def attack_table(samples: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    att = samples[samples.evaluation == "attack"]
    flags: list[str] = []
    if att.empty:
        return pd.DataFrame(), flags
    rows = []
    att = att.assign(_sweep=sweep_keys(att))
    labels = {k: attack_label(g.sort_values("eps").setting.iloc[-1]) for k, g in att.groupby("_sweep")}
    for (model, setting), g in att.groupby(["model", "setting"], sort=True):
        rows.append({"model": model, "attention": g.attention.iloc[0], "attack": g.attack.iloc[0],
                     "norm": g.norm.iloc[0], "eps": float(g.eps.iloc[0]), "setting": setting,
                     "robust": 100 * float(g.correct.mean()), "clean": 100 * float(g.clean_correct.mean()),
                     "n": len(g), "sweep": labels[g._sweep.iloc[0]]})
    df = pd.DataFrame(rows)
    # worst case per sample over attacks at the same (norm, eps), on the samples every attack saw
    worst = []
    for (model, norm, eps), g in att.groupby(["model", "norm", "eps"], sort=True):
        if g.attack.nunique() < 2 or norm == "patch":
            continue
        common = set.intersection(*(set(x.sample_id) for _, x in g.groupby("setting")))
        gg = g[g.sample_id.isin(common)]
        per_sample = gg.groupby("sample_id").correct.all()
        worst.append({"model": model, "attention": g.attention.iloc[0], "attack": "worst-case", "norm": norm,
                      "eps": float(eps), "setting": f"worst-case/{norm}/eps={eps:.6g}",
                      "robust": 100 * float(per_sample.mean()),
                      "clean": 100 * float(gg.groupby("sample_id").clean_correct.first().mean()),
                      "n": len(per_sample), "sweep": f"worst-case {norm}"})
    df = pd.concat([df, pd.DataFrame(worst)], ignore_index=True) if worst else df
    for (model, sweep), g in df[df.attack != "worst-case"].groupby(["model", "sweep"], sort=True):
        if len(g) < 2 and not (g.eps == 0).any():
            continue
        pts = list(zip(g.eps, g.robust / 100))
        clean = float(g.clean.iloc[0]) / 100 if g.n.nunique() == 1 else float(g.clean.mean()) / 100
        flags += [f"{model} {sweep}: {f}" for f in sweep_flags(pts, clean)]
    return df.sort_values(["attack", "norm", "eps", "model"]).reset_index(drop=True), flags


def shift_table(samples: pd.DataFrame) -> pd.DataFrame:
    """Top-1 (%) per model and distribution-shift set, with the set's n for that model."""
    sh = samples[samples.evaluation == "shift"]
    rows = [{"model": model, "attention": g.attention.iloc[0], "setting": name, "n": len(g),
             "accuracy": 100 * g.correct.mean()} for (model, name), g in sh.groupby(["model", "setting"])]
    return pd.DataFrame(rows, columns=["model", "attention", "setting", "n", "accuracy"])


def _patch_samples(samples: pd.DataFrame) -> pd.DataFrame:
    p = samples[(samples.evaluation == "attack") & (samples.attack == "patch")] if "attack" in samples \
        else samples.iloc[0:0]
    return p.assign(loss=[x.split("/")[1] for x in p.setting],
                    steps=[int(re.search(r"steps=(\d+)", x).group(1)) if "steps=" in x else 0 for x in p.setting])


def patch_table(p: pd.DataFrame) -> pd.DataFrame:
    """Per model, loss and patch count of the patch samples (``_patch_samples``): robust accuracy, and the
    attention mass and key norm of the patch tokens (and of the tokens the patch reaches through the stem, where
    recorded) before and after the attack."""
    rows = []
    for (model, loss, k), g in p.groupby(["model", "loss", "eps"], sort=True):
        row = {"model": model, "loss": loss, "patches": int(k), "robust": 100 * g.correct.mean(),
               "patch_mass_clean": 100 * g.patch_mass_clean.mean(), "patch_mass_adv": 100 * g.patch_mass_adv.mean(),
               "patch_k_clean": g.patch_k_norm_clean.mean(), "patch_k_adv": g.patch_k_norm_adv.mean()}
        if "reached_mass_clean" in p:
            row.update({"reached_mass_clean": 100 * g.reached_mass_clean.mean(),
                        "reached_mass_adv": 100 * g.reached_mass_adv.mean(),
                        "reached_k_clean": g.reached_k_norm_clean.mean(),
                        "reached_k_adv": g.reached_k_norm_adv.mean()})
        rows.append({**row, "n": len(g)})
    return pd.DataFrame(rows)


def convergence_table(p: pd.DataFrame) -> pd.DataFrame:
    """Patch robust accuracy (%) had the attack stopped after t steps, read off each sample's first-success step
    over all restarts (``p``: the patch samples): one column per t of a fixed grid up to the run's steps (NaN past
    a setting's own steps), and the fall over the last half of the steps."""
    p = p[p.eps > 0] if not p.empty else p
    if p.empty or "first_success_step" not in p:
        return pd.DataFrame()
    total = int(p.steps.max())
    grid = sorted(x for x in {0, 1, 2, 5, 10, 20, 50, 100, total // 2, total} if x <= total)
    rows = []
    for (model, loss, k, steps), g in p.groupby(["model", "loss", "eps", "steps"], sort=True):
        first = pd.to_numeric(g.first_success_step, errors="coerce")
        ok = g.clean_correct.astype(bool)
        row = {"model": model, "loss": loss, "patches": int(k)}
        for t in grid:
            row[t] = np.nan if t > steps else 100 * (ok & ~(first <= t)).mean()
        row["last_half_drop"] = 100 * ((ok & ~(first <= steps // 2)).mean() - (ok & ~(first <= steps)).mean())
        rows.append(row)
    return pd.DataFrame(rows)


def mechanism_table(diagnostics: pd.DataFrame) -> pd.DataFrame:
    """Attention diagnostics per model, averaged over layers (|k| max: the largest over layers)."""
    d = diagnostics
    if d.empty:
        return pd.DataFrame()
    g = d.groupby(["model", "attention"], sort=True)
    return pd.DataFrame({
        "entropy": g.entropy.mean(), "H / log N": (d.entropy / d.max_entropy).groupby(
            [d.model, d.attention]).mean(),
        "max w": g.max_attention.mean(), "|q|": g.q_norm_mean.mean(), "|k|": g.k_norm_mean.mean(),
        "|k| max": g.k_norm_max.max(), "layers": g.layer.nunique()}).reset_index()


STUDY_COLUMNS = ["family", "contrast", "endpoint", "evaluation", "setting", "n_pairs", "n_images", "delta_pp",
                 "ci_low", "ci_high", "se", "df", "p_value", "p_holm", "p_equivalence", "p_equivalence_holm",
                 "detectable_pp", "verdict"]


def _endpoint_rows(samples: pd.DataFrame, endpoints: list[dict]) -> list[tuple[str, str, str]]:
    """(endpoint name, evaluation label, setting label) of each declared endpoint, as the seed tables name them."""
    att = samples[samples.evaluation == "attack"]
    out = []
    for e in endpoints:
        if e["evaluation"] == "clean":
            out.append((e["name"], "clean", "clean"))
        elif e["evaluation"] == "corruption":
            out.append((e["name"], "corruption", RELATIVE))
        else:
            g = att[att.sweep == e["sweep"]]
            label = attack_label(g.sort_values("eps").setting.iloc[-1]) if not g.empty else e["name"]
            out.append((e["name"], label, budget_label("pgd", e["eps"])))
    return out


def study_table(samples: pd.DataFrame, seeds: pd.DataFrame, contrasts: pd.DataFrame,
                study: Optional[dict]) -> pd.DataFrame:
    """A verdict for every contrast (each kind against standard, each kind against each other kind, the factorial
    effects) at every declared primary endpoint: stats.study.conclude with Holm across the endpoints of one
    contrast. Empty without a declared study or without two or more seeds."""
    from ..stats.study import conclude

    if not study or (seeds.empty and contrasts.empty):
        return pd.DataFrame(columns=STUDY_COLUMNS)
    endpoints = _endpoint_rows(samples, study["primary"])
    margin = study.get("margin_pp")
    rows = [r | {"family": "kind vs standard", "contrast": f"{r['attention']} - standard"}
            for r in seeds.to_dict("records")] + contrasts.to_dict("records")
    out = []
    for contrast in dict.fromkeys(r["contrast"] for r in rows):
        found = []
        for name, evaluation, setting in endpoints:
            hit = [r for r in rows if r["contrast"] == contrast and r["evaluation"] == evaluation
                   and r["setting"] == setting]
            if hit:
                found.append(hit[0] | {"endpoint": name})
        out += [{c: r.get(c) for c in STUDY_COLUMNS} for r in conclude(found, margin)]
    return pd.DataFrame(out, columns=STUDY_COLUMNS)


def compute_tables(results: Results) -> Tables:
    samples = results.samples
    run = results.run
    dataset = run.dataset.name
    corr, sev, metric, notes = corruption_tables(samples, dataset)
    spec = run.suite.corruptions or {}
    if metric and spec.get("engine") == "torch":  # which constants made the corruptions decides what errors mean
        metric += {"cifar-c": ", CIFAR-10-C constants", "imagenet-c": ", ImageNet-C constants",
                   "auto": ", CIFAR-10-C constants at <= 64 px"}.get(spec.get("params"), "")
    att, flags = attack_table(samples)
    checks = checks_table(samples)  # computed once: the Flags sentences, the checks table and the csv rows
    flags = flags + flag_sentences(checks)
    job_flags = []
    if not results.jobs.empty and "flags" in results.jobs:
        for _, j in results.jobs.iterrows():
            if j["flags"]:
                job_flags.append(f"{j['model']} {j['setting']}: {j['flags']}")
    patch_samples = _patch_samples(samples)
    paired: dict = {}  # per-image sums shared by the across-seed rows and the contrasts between kinds
    seeds, contrasts = compare_seeds(results, cache=paired), compare_kinds(results, cache=paired)
    study = run.suite.study
    return Tables(clean=clean_table(samples), corruptions=corr, severity=sev, attacks=att,
                  pairs=compare_pairs(results), seeds=seeds, flags=sorted(set(flags + job_flags)),
                  contrasts=contrasts, study=study_table(samples, seeds, contrasts, study),
                  margin_pp=(study or {}).get("margin_pp"),
                  corruption_metric=metric, notes=notes, checks=checks, shifts=shift_table(samples),
                  shift_excluded=run.shifts["imagenet-real"].excluded_without_labels if "imagenet-real" in run.shifts
                  else 0,
                  patches=patch_table(patch_samples), convergence=convergence_table(patch_samples),
                  mechanism=mechanism_table(results.diagnostics),
                  n_diagnostics=len(run.sample_ids.get("diagnostics", [])),
                  devices=model_devices(run),
                  kinds={name: agg for name, k in KINDS.items() if k.aggregate is not None
                         if (agg := k.aggregate(results)) is not None})


def model_devices(run: Provenance) -> dict[str, str]:
    """Each model's device when the results join folders that ran on more than one (else empty: one device,
    named once in the provenance)."""
    devices = {name: str(m.device_name) for name, m in run.models.items() if m.folder is not None}
    return devices if len(set(devices.values())) > 1 else {}
