"""Results in RobustBench's formats: one ``model_info`` JSON per model and threat model, with RobustBench's field
names and string accuracies, and ``unaggregated_results.csv`` for corruptions (accuracy per corruption and
severity, two header rows), laid out as ``<out>/<dataset>/<threat model>/<model>.json``.

Fields questbench cannot know (link, authors, venue) come from the registry entry where it has them, else stay
empty. The footnote says how many samples each number rests on: RobustBench evaluates full test sets.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pandas as pd

from ..errors import QuestbenchError
from ..metrics import ALL_CORRUPTIONS, resolves_5pp
from .._io import atomic_write_bytes
from ..results import Results
from .labels import eps_label
from .tables import compute_tables

MODEL_INFO_FIELDS = ["link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
                     "architecture", "eps", "clean_acc", "reported", "autoattack_acc", "footnote", "unreliable"]
CORRUPTION_FIELDS = [f for f in MODEL_INFO_FIELDS if f not in ("autoattack_acc",)] + ["corruptions_acc",
                                                                                       "corruptions_mce"]


def _acc(value: float) -> str:
    return f"{value:.2f}"  # RobustBench writes accuracies as strings with two decimals


def _base(results: Results, model: str, clean: dict[str, float]) -> dict:
    prov = results.provenance
    m = prov.get("models", {}).get(model, {})
    return {"link": "", "name": model, "authors": "", "additional_data": False, "number_forward_passes": 1,
            "dataset": prov.get("dataset", {}).get("name", ""), "venue": "", "architecture": m.get("arch", ""),
            "clean_acc": _acc(clean[model]) if model in clean else "", "reported": ""}


def robustbench_files(results: Results) -> dict[str, bytes]:
    """Relative path -> file content."""
    t = compute_tables(results)
    dataset = results.provenance.get("dataset", {}).get("name", "dataset") or "dataset"
    clean = dict(zip(t.clean.model, t.clean.top1)) if not t.clean.empty else {}
    clean_n = dict(zip(t.clean.model, t.clean.n)) if not t.clean.empty else {}
    files: dict[str, bytes] = {}
    aa = t.attacks[t.attacks.attack == "autoattack"] if not t.attacks.empty else t.attacks
    for norm, g_norm in (aa.groupby("norm") if not aa.empty else []):
        several = g_norm.eps.nunique() > 1
        for (model, eps), g in g_norm.groupby(["model", "eps"]):
            r = g.iloc[0]
            n = int(r.n)
            doc = _base(results, model, clean) | {
                "eps": eps_label(eps), "autoattack_acc": _acc(r.robust),
                "footnote": f"questbench: reference AutoAttack (standard) on {n} test images, clean accuracy on "
                            f"{clean_n.get(model, 0)}; not a RobustBench-verified entry.",
                "unreliable": not resolves_5pp(n)}
            sub = f"{norm}/{eps_label(eps).replace('/', '_')}" if several else norm
            files[f"{dataset}/{sub}/{model}.json"] = _json(doc, MODEL_INFO_FIELDS)
    if not t.corruptions.empty:
        sev = t.severity
        for _, row in t.corruptions.iterrows():
            model = row.model
            s = sev[sev.model == model]
            n = int(s.n.max())
            doc = _base(results, model, clean) | {
                "eps": None, "corruptions_acc": _acc(float(s.accuracy.mean())),
                "corruptions_mce": _acc(row.summary) if t.corruption_metric.startswith("mCE") else "",
                "footnote": f"questbench: {t.corruption_metric} over {s.corruption.nunique()} corruptions x "
                            f"{s.severity.nunique()} severities on {n} images.",
                "unreliable": not resolves_5pp(n)}
            files[f"{dataset}/corruptions/{model}.json"] = _json(doc, CORRUPTION_FIELDS)
        files[f"{dataset}/corruptions/unaggregated_results.csv"] = _unaggregated(sev)
    if not files:
        raise QuestbenchError("nothing to export in RobustBench's formats: the results hold no AutoAttack and no "
                              "corruption jobs")
    return files


def _json(doc: dict, fields: list[str]) -> bytes:
    return (json.dumps({f: doc.get(f, "") for f in fields}, indent=2) + "\n").encode()


def _unaggregated(sev: pd.DataFrame) -> bytes:
    """RobustBench's layout: two header rows (corruption, severity), then a row of accuracies (fractions) per
    model."""
    order = [c for c in ALL_CORRUPTIONS if c in set(sev.corruption)]
    cols = [(c, s) for c in order for s in sorted(sev[sev.corruption == c].severity.unique())]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([""] + [c for c, _ in cols])
    w.writerow([""] + [int(s) for _, s in cols])
    for model, g in sev.groupby("model", sort=True):
        acc = {(r.corruption, r.severity): r.accuracy / 100 for r in g.itertuples()}
        w.writerow([model] + [f"{acc[c]:.4f}" if c in acc else "" for c in cols])
    return buf.getvalue().encode()


def export_robustbench(results: Results, out) -> list[Path]:
    from ..models import check_creatable
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise QuestbenchError(f"--out {out} exists and is not a folder")
    check_creatable(out, "--out")
    written = []
    for rel, data in sorted(robustbench_files(results).items()):
        atomic_write_bytes(out / rel, data)
        written.append(out / rel)
    return written
