"""Results in RobustBench's formats, as RobustBench's own readers take them (``leaderboard/template.py:
generate_leaderboard``, ``utils.py: list_available_models, get_leaderboard_latex, update_json``, the csv step of
``eval.py: corruptions_evaluation``; `tests/test_robustbench_export.py` runs them on an export).

- ``<dataset>/<threat model>/<model>.json``: one ``model_info`` file per model and threat model, RobustBench's
  field names, accuracies as strings. RobustBench's readers glob ``<dataset>/<threat model>/*.json``, so one eps
  per threat model: RobustBench's own for the dataset when the run has it, else the largest (``eps`` chooses).
- ``<dataset>/corruptions/unaggregated_results.csv``: accuracy per corruption and severity, two header rows, with
  AlexNet's row for ImageNet (RobustBench's mCE divides by it). Corruption files only for models with all 15
  common corruptions at 5 severities: RobustBench's ``corruptions_acc`` is the mean over exactly that grid.

RobustBench knows three datasets; a run on another is exported under its own name with a note that RobustBench's
readers will refuse it. Fields questbench cannot know stay as RobustBench writes them when unknown ("N/A").
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from .._io import atomic_write_bytes, check_creatable, safe_name
from .escaping import csv_text
from ..errors import QuestbenchError
from ..config.corruptions import COMMON_CORRUPTIONS
from ..stats.metrics import alexnet_errors, mce
from ..store.results import Results
from .checks import checks_table
from ..config.labels import eps_label
from .tables import compute_tables

MODEL_INFO_FIELDS = ["link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
                     "architecture", "eps", "clean_acc", "reported", "autoattack_acc", "footnote", "unreliable"]
CORRUPTION_FIELDS = [f for f in MODEL_INFO_FIELDS if f not in ("autoattack_acc", "unreliable")] + [
    "corruptions_acc", "corruptions_mce"]

ROBUSTBENCH_DATASETS = ("cifar10", "cifar100", "imagenet")  # RobustBench's BenchmarkDataset values
_DATASET_NAMES = {"cifar10-c": "cifar10", "cifar-10-c": "cifar10", "cifar100-c": "cifar100",
                  "cifar-100-c": "cifar100", "imagenet": "imagenet"}  # a suite's data.dataset -> RobustBench's
# the eps of RobustBench's leaderboards (robustbench.github.io)
STANDARD_EPS = {("cifar10", "Linf"): 8 / 255, ("cifar10", "L2"): 0.5, ("cifar100", "Linf"): 8 / 255,
                ("imagenet", "Linf"): 4 / 255}
UNKNOWN = "N/A"  # RobustBench's value for a venue it has none for (its bibtex step skips such entries)


@dataclass
class Export:
    files: dict[str, bytes]  # relative path -> content
    notes: list[str] = field(default_factory=list)  # what was left out and why, one line each


def _acc(value: float) -> str:
    return f"{value:.2f}"  # RobustBench writes accuracies as strings of percentages


def robustbench_dataset(results: Results, dataset: Optional[str] = None) -> str:
    """RobustBench's name for the run's dataset (``dataset`` overrides), else the run's own name."""
    if dataset:
        return dataset
    name = str(results.run.suite.data.get("dataset") or results.run.dataset.name or "dataset")
    return _DATASET_NAMES.get(name.lower().replace("_", "-"), name)


def _link(source: str) -> str:
    """A link for a checkpoint source where one follows from it (timm's pretrained weights on the Hub)."""
    if source.startswith("timm:"):
        return "https://huggingface.co/timm/" + source.removeprefix("timm:")
    if source.startswith(("hf-hub:", "hf_hub:")):
        return "https://huggingface.co/" + source.split(":", 1)[1]
    return UNKNOWN


def _base(results: Results, model: str, dataset: str, clean: float) -> dict:
    m = results.run.models[model]
    return {"link": _link(m.source), "name": model, "authors": "", "additional_data": False,
            "number_forward_passes": 1, "dataset": dataset, "venue": UNKNOWN, "architecture": m.arch,
            "clean_acc": _acc(clean), "reported": ""}


def _chosen_eps(norm: str, available: list[float], dataset: str, eps: Optional[float]) -> float:
    if eps is not None:
        hit = [e for e in available if abs(e - eps) < 1e-9]
        if not hit:
            raise QuestbenchError(f"--eps {eps_label(eps)}: AutoAttack {norm} ran at "
                                  f"{', '.join(eps_label(e) for e in available)} only")
        return hit[0]
    standard = STANDARD_EPS.get((dataset, norm))
    hit = [e for e in available if standard is not None and abs(e - standard) < 1e-9]
    return hit[0] if hit else max(available)


def robustbench_files(results: Results, dataset: Optional[str] = None, eps: Optional[float] = None) -> Export:
    t = compute_tables(results)
    ds = robustbench_dataset(results, dataset)
    notes = []
    if ds not in ROBUSTBENCH_DATASETS:
        notes.append(f"note: {ds!r} is not one of RobustBench's datasets ({', '.join(ROBUSTBENCH_DATASETS)}): its "
                     "readers refuse the folder at their dataset enum (--dataset names the dataset if it is one)")
    clean = dict(zip(t.clean.model, t.clean.top1)) if not t.clean.empty else {}
    clean_n = dict(zip(t.clean.model, t.clean.n)) if not t.clean.empty else {}
    checks = checks_table(results.samples)
    flagged = {r["model"] for r in (checks[1] if checks else []) if r["flag"]}
    files: dict[str, bytes] = {}
    no_clean: set[str] = set()
    aa = t.attacks[t.attacks.attack == "autoattack"] if not t.attacks.empty else t.attacks
    for norm, g_norm in (aa.groupby("norm") if not aa.empty else []):
        available = sorted(float(e) for e in g_norm.eps.unique())
        chosen = _chosen_eps(norm, available, ds, eps)
        left = [eps_label(e) for e in available if e != chosen]
        if left:
            notes.append(f"note: {norm}: exported AutoAttack at {eps_label(chosen)}; not at {', '.join(left)} "
                         "(RobustBench holds one eps per dataset and threat model; --eps chooses)")
        for model, g in g_norm[np.isclose(g_norm.eps, chosen)].groupby("model"):
            if model not in clean:
                no_clean.add(model)
                continue
            n = int(g.iloc[0].n)
            doc = _base(results, model, ds, clean[model]) | {
                "eps": eps_label(chosen), "autoattack_acc": _acc(float(g.iloc[0].robust)),
                "footnote": f"questbench: reference AutoAttack (standard) at {eps_label(chosen)} on {n} test images; "
                            f"clean accuracy on {clean_n[model]}. Not verified by RobustBench.",
                # RobustBench's flag: the AutoAttack number may overstate robustness (a defence that masks
                # gradients); questbench's attack checks are the evidence for it
                "unreliable": model in flagged}
            files[f"{safe_name(ds)}/{norm}/{safe_name(model)}.json"] = _json(doc, MODEL_INFO_FIELDS)
    if not t.severity.empty:
        files.update(_corruption_files(results, t, ds, clean, clean_n, no_clean, notes))
    if no_clean:
        notes.append(f"note: left out {', '.join(sorted(no_clean))}: no clean accuracy in the results "
                     "(RobustBench's files need one)")
    if not files:
        raise QuestbenchError("nothing to export in RobustBench's formats: the results hold no AutoAttack and no "
                              "complete corruption grid (15 common corruptions x 5 severities) with clean accuracy")
    return Export(files, notes)


def _corruption_files(results: Results, t, ds: str, clean: dict, clean_n: dict, no_clean: set,
                      notes: list[str]) -> dict[str, bytes]:
    sev = t.severity
    grid = {(c, s) for c in COMMON_CORRUPTIONS for s in range(1, 6)}
    complete = []
    for model, g in sev.groupby("model", sort=True):
        have = {(c, int(s)) for c, s in zip(g.corruption, g.severity)}
        if not grid <= have:
            notes.append(f"note: {model}: corruptions left out: {len(grid - have)} of RobustBench's 75 "
                         "corruption x severity cells did not run (its corruptions_acc is the mean over all 75)")
        elif model not in clean:
            no_clean.add(model)
        else:
            complete.append(model)
    files = {}
    imagenet = ds == "imagenet"
    source = results.run.corruption_implementation
    for model in complete:
        s = sev[(sev.model == model) & sev.corruption.isin(COMMON_CORRUPTIONS)]
        n = int(s.n.max())
        doc = _base(results, model, ds, clean[model]) | {
            "eps": None, "corruptions_acc": _acc(float(s.accuracy.mean())),
            "footnote": f"questbench: mean accuracy over the 15 common corruptions x 5 severities on {n} images "
                        f"({source}); clean accuracy on {clean_n[model]}. Not verified by RobustBench."}
        if imagenet:  # RobustBench computes mCE against AlexNet for ImageNet only
            errors = {c: [1 - float(s[(s.corruption == c) & (s.severity == k)].accuracy.iloc[0]) / 100
                          for k in range(1, 6)] for c in COMMON_CORRUPTIONS}
            doc["corruptions_mce"] = _acc(mce(errors))
        files[f"{safe_name(ds)}/corruptions/{safe_name(model)}.json"] = _json(doc, [f for f in CORRUPTION_FIELDS if f in doc])
    if complete:
        files[f"{safe_name(ds)}/corruptions/unaggregated_results.csv"] = _unaggregated(sev[sev.model.isin(complete)], imagenet)
    return files


def _json(doc: dict, fields: list[str]) -> bytes:
    return (json.dumps({f: doc.get(f, "") for f in fields}, indent=2) + "\n").encode()


def _unaggregated(sev: pd.DataFrame, alexnet: bool) -> bytes:
    """RobustBench's layout: two header rows (corruption, severity), then a row of accuracies (fractions) per
    model; for ImageNet first AlexNet's (1 - its published ImageNet-C errors), which RobustBench's mCE reads."""
    cols = [(c, s) for c in COMMON_CORRUPTIONS for s in range(1, 6)]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([""] + [c for c, _ in cols])
    w.writerow([""] + [s for _, s in cols])
    if alexnet:
        base = alexnet_errors()
        w.writerow(["AlexNet"] + [f"{1 - base[c][s - 1]:.5f}" for c, s in cols])
    for model, g in sev.groupby("model", sort=True):
        acc = {(r.corruption, int(r.severity)): r.accuracy / 100 for r in g.itertuples()}
        w.writerow([csv_text(str(model))] + [f"{acc[c]:.4f}" for c in cols])
    return buf.getvalue().encode()


def export_robustbench(results: Results, out, dataset: Optional[str] = None,
                       eps: Optional[float] = None) -> tuple[list[Path], list[str]]:
    """Write the export under ``out``; returns the files written and the notes."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise QuestbenchError(f"--out {out} exists and is not a folder")
    check_creatable(out, "--out")
    export = robustbench_files(results, dataset, eps)
    written = []
    for rel, data in sorted(export.files.items()):
        atomic_write_bytes(out / rel, data, within=out)
        written.append(out / rel)
    return written, export.notes
