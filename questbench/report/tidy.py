"""Every number of the leaderboard as one tidy, deterministic csv."""
from __future__ import annotations

import csv
import io
from typing import Optional

import pandas as pd

from ..config.labels import budget_label
from ..stats.metrics import resolves_5pp
from ..kinds import KINDS
from ..store.results import Results
from .escaping import csv_text
from .tables import CORRUPTION_SUMMARY_KEYS, Tables, compute_tables


CSV_COLUMNS = ["table", "model", "attention", "baseline", "evaluation", "setting", "eps", "n", "n_pairs",
               "accuracy_pct", "accuracy_ci_low_pct", "accuracy_ci_high_pct", "baseline_accuracy_pct", "error_pct",
               "delta_pp", "delta_ci_low_pp", "delta_ci_high_pp", "p_value", "p_holm", "resolves_5pp",
               "entropy_nats", "entropy_ratio", "max_attention", "q_norm_mean", "k_norm_mean", "k_norm_max", "flag"]


def csv_rows(results: Results, t: Optional[Tables] = None) -> pd.DataFrame:
    """Every number of the leaderboard in one tidy table: a row per (table, model, setting), one metric per
    column with its unit in the name, n on every row."""
    t = t or compute_tables(results)
    rows: list[dict] = []
    for _, r in t.clean.iterrows():
        rows.append({"table": "clean", "model": r.model, "attention": r.attention, "evaluation": "clean",
                     "setting": "clean", "n": r.n, "accuracy_pct": r.top1, "accuracy_ci_low_pct": r.ci_low,
                     "accuracy_ci_high_pct": r.ci_high})
    n_corr = t.severity.groupby("model").n.max() if not t.severity.empty else {}
    skip = CORRUPTION_SUMMARY_KEYS
    for _, r in t.corruptions.iterrows():
        base = {"model": r.model, "attention": r.attention, "evaluation": "corruption", "n": n_corr.get(r.model)}
        rows.append({**base, "table": "corruption_summary", "setting": t.corruption_metric, "error_pct": r.summary})
        if "relative_mce" in r and pd.notna(r.relative_mce):
            rows.append({**base, "table": "corruption_summary", "setting": "relative mCE (%)",
                         "error_pct": r.relative_mce})
        if "relative" in r and pd.notna(r.relative):
            rows.append({**base, "table": "corruption_summary", "setting": "relative corruption error (%)",
                         "error_pct": r.relative})
        if "clean_same_images" in r and pd.notna(r.clean_same_images):
            rows.append({**base, "table": "corruption_summary", "setting": "clean error on these images (%)",
                         "error_pct": 100 - r.clean_same_images})
        rows += [{**base, "table": "corruption", "setting": c, "error_pct": r[c]} for c in r.index if c not in skip]
    for _, r in t.severity.iterrows():
        rows.append({"table": "corruption_severity", "model": r.model, "evaluation": "corruption",
                     "setting": f"{r.corruption}/{r.severity}", "n": r.n, "accuracy_pct": r.accuracy})
    for _, r in t.attacks.iterrows():
        rows.append({"table": "attack", "model": r.model, "attention": r.attention, "evaluation": r.sweep,
                     "setting": budget_label(r.attack, r.eps), "eps": r.eps, "n": r.n, "accuracy_pct": r.robust})
    for _, r in t.pairs.iterrows():
        rows.append({"table": "pair", "model": r.model, "baseline": r.baseline, "evaluation": r.evaluation,
                     "setting": r.setting, "n": r.n_images, "accuracy_pct": r.model_acc,
                     "baseline_accuracy_pct": r.baseline_acc, "delta_pp": r.delta_pp, "delta_ci_low_pp": r.ci_low,
                     "delta_ci_high_pp": r.ci_high, "p_value": r.p_value, "p_holm": r.p_holm})
    for _, r in t.seeds.iterrows():
        rows.append({"table": "seeds", "attention": r.attention, "baseline": "standard", "evaluation": r.evaluation,
                     "setting": r.setting, "n": r.n_images, "n_pairs": r.n_pairs, "delta_pp": r.delta_pp,
                     "delta_ci_low_pp": r.ci_low, "delta_ci_high_pp": r.ci_high, "p_value": r.p_value,
                     "model": r.pairs})
    checks = t.checks
    for r in (checks[1] if checks is not None else []):
        rows.append({"table": "check", "model": r["model"], "attention": r["attention"], "evaluation": r["check"],
                     "setting": r["setting"], "n": r["n"], "accuracy_pct": r["accuracy_pct"],
                     "baseline_accuracy_pct": r["baseline_accuracy_pct"], "p_value": r["p_value"],
                     "flag": r["flag"]})
    for _, r in t.shifts.iterrows():
        rows.append({"table": "shift", "model": r.model, "attention": r.attention, "evaluation": "shift",
                     "setting": r.setting, "n": r.n, "accuracy_pct": r.accuracy})
    for _, r in results.diagnostics.iterrows():
        rows.append({"table": "attention", "model": r.model, "attention": r.attention, "evaluation": "clean",
                     "setting": r.layer, "n": t.n_diagnostics,
                     "entropy_nats": r.entropy, "entropy_ratio": r.entropy / r.max_entropy,
                     "max_attention": r.max_attention, "q_norm_mean": r.q_norm_mean, "k_norm_mean": r.k_norm_mean,
                     "k_norm_max": r.k_norm_max})
    for name, agg in t.kinds.items():
        rows += KINDS[name].csv(agg)
    df = pd.DataFrame(rows, columns=CSV_COLUMNS)
    df["resolves_5pp"] = [resolves_5pp(int(n)) if pd.notna(n) else None for n in df.n]
    return df


def render_csv(results: Results, t: Optional[Tables] = None) -> str:
    """The tidy table as csv, sorted, fixed precision: the same results always give a byte-identical file."""
    df = csv_rows(results, t)
    text_cols = ["table", "model", "attention", "baseline", "evaluation", "setting"]
    df = df.sort_values(text_cols + ["eps"], key=lambda c: c.astype(str), kind="stable")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for row in df.itertuples(index=False):
        out = []
        for col, v in zip(CSV_COLUMNS, row):
            if v is None or (not isinstance(v, str) and pd.isna(v)):
                out.append("")
            elif col in ("n", "n_pairs"):
                out.append(str(int(v)))
            elif col == "resolves_5pp":
                out.append(str(bool(v)).lower())
            elif isinstance(v, (int, float)) and col not in text_cols:
                out.append(f"{float(v):.6f}")
            else:
                out.append(csv_text(str(v)))
        w.writerow(out)
    return buf.getvalue()
