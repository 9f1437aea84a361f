"""Leaderboards from a results folder: markdown (with plots beside it), rich, and deterministic csv."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Optional

import pandas as pd

from ..errors import QuestbenchError
from ..results import Results, load_results
from ..metrics import MIN_N_5PP, resolves_5pp
from .compare import AGGREGATE
from .labels import eps_label
from .tables import Tables, compute_tables

FORMATS = ("md", "rich", "csv")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


SMALL_N_NOTE = (f"n* : fewer than {MIN_N_5PP} samples, so a 95% interval on one accuracy is wider than +-5 pp: too "
                "few to resolve a 5 pp difference; never used for ranking.")


def _n_label(n: int) -> str:
    return f"n={n}" if resolves_5pp(n) else f"n={n}*"


def attack_wide(att: pd.DataFrame) -> pd.DataFrame:
    """One row per model, one column per (attack, norm, eps) setting family."""
    if att.empty:
        return att
    att = att.copy()
    # n in every header: attacks run on different subsets (AutoAttack on fewer samples), and the worst case
    # is taken only over the samples every attack at that eps saw, so columns are not all on the same images
    att["column"] = [f"{sw} {eps_label(e)} ({_n_label(k)})" for sw, e, k in zip(att.sweep, att.eps, att.n)]
    order = list(dict.fromkeys(att.sort_values(["attack", "norm", "eps"]).column))
    wide = att.pivot_table(index=["model", "attention"], columns="column", values="robust", aggfunc="first")
    wide = wide[order].reset_index()
    # ranked by the last column whose n resolves 5 pp (a 16-sample column must not decide the order)
    ranked = [c for c in order if not c.endswith("*)")] or order
    return wide.sort_values([ranked[-1], "model"], ascending=[False, True]).reset_index(drop=True)


def sections(t: Tables, results: Results) -> list[tuple[str, pd.DataFrame, list[str]]]:
    out = []
    if not t.clean.empty:
        df = t.clean.assign(**{"top-1 (%)": t.clean.top1, "95% CI": [f"{a:.1f}-{b:.1f}" for a, b in
                                                                       zip(t.clean.ci_low, t.clean.ci_high)],
                               "n": [_n_label(n).removeprefix("n=") for n in t.clean.n]})
        out.append(("Clean accuracy", df[["model", "attention", "top-1 (%)", "95% CI", "n"]], []))
    if not t.corruptions.empty:
        cols = ["model", "attention", "summary"] + (["relative_mce"] if "relative_mce" in t.corruptions else []) + \
            [c for c in t.corruptions.columns if c not in ("model", "attention", "summary", "relative_mce")]
        df = t.corruptions[cols].rename(columns={"summary": t.corruption_metric.split(" (")[0],
                                                 "relative_mce": "relative mCE"})
        out.append((f"Corruptions: {t.corruption_metric}, lower is better; per-corruption columns are error (%) "
                    "averaged over severities", df, t.notes))
    if not t.attacks.empty:
        notes = []
        if not t.attacks.n.map(resolves_5pp).all():
            notes.append(SMALL_N_NOTE)
        if (t.attacks.attack == "worst-case").any():
            notes.append("worst-case: a sample counts as robust only if it survives every attack run at that "
                         "norm and eps; computed on the samples all of those attacks saw (n given with it).")
        out.append(("Adversarial robust accuracy (%)", attack_wide(t.attacks), notes))
    if not t.pairs.empty:
        # per-corruption settings stay in the csv and `questbench compare`; the table keeps what is claimed
        df = t.pairs[(t.pairs.evaluation != "corruption") | (t.pairs.setting == AGGREGATE)].copy()
        df = df.assign(**{"delta (pp)": [f"{d:+.2f}" for d in df.delta_pp],
                          "95% CI (pp)": [f"{a:+.2f} to {b:+.2f}" for a, b in zip(df.ci_low, df.ci_high)],
                          "p": [f"{p:.3g}" for p in df.p_value], "p (Holm)": [f"{p:.3g}" for p in df.p_holm],
                          "n": [_n_label(n) for n in df.n_images]})
        df = df.rename(columns={"baseline_acc": "standard acc", "model_acc": "model acc"})
        notes = ["One row per setting: exact McNemar test, paired bootstrap over images. Rows 'all' aggregate a "
                 "whole sweep (eps > 0) or every corruption setting: the image is the unit (cluster bootstrap, "
                 "sign-flip permutation test over images), never the rows. p (Holm): adjusted within the "
                 "headline family (clean and the 'all' rows) and within each evaluation's settings. n counts "
                 "images."]
        if not df.n_images.map(resolves_5pp).all():
            notes.append(SMALL_N_NOTE)
        out.append(("Paired comparison with the standard-attention sibling (model minus standard)",
                    df[["model", "baseline", "evaluation", "setting", "standard acc", "model acc", "delta (pp)",
                        "95% CI (pp)", "p", "p (Holm)", "n"]], notes))
    if not t.seeds.empty:
        df = t.seeds.assign(**{"mean delta (pp)": [f"{d:+.2f}" for d in t.seeds.delta_pp],
                               "95% CI (pp)": [f"{a:+.2f} to {b:+.2f}" for a, b in zip(t.seeds.ci_low, t.seeds.ci_high)],
                               "per-pair deltas (pp)": t.seeds.per_pair_delta_pp, "pairs": t.seeds.n_pairs,
                               "n": [_n_label(n) for n in t.seeds.n_images]})
        notes = ["Across trained pairs (seeds): the mean of the per-pair deltas, with a 95% interval from a crossed "
                 "bootstrap that resamples pairs and images, so it includes seed-to-seed variation. With "
                 f"{int(t.seeds.n_pairs.max())} pairs the pair-level spread is estimated from "
                 f"{int(t.seeds.n_pairs.max())} draws only."]
        out.append(("Across seeds (attention kind minus standard)",
                    df[["attention", "evaluation", "setting", "pairs", "per-pair deltas (pp)", "mean delta (pp)",
                        "95% CI (pp)", "n"]], notes))
    return out


def _md_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    return "\n".join(lines)


def provenance_lines(results: Results) -> list[str]:
    p = results.provenance
    if not p:
        return ["(no provenance.json in this folder)"]
    v = p.get("versions", {})
    lines = [f"- suite: `{p['suite'].get('name')}` (sha256 `{p.get('suite_sha256', '')[:12]}`), seed {p.get('seed')}",
             f"- dataset: {p.get('dataset', {}).get('name')} {p.get('dataset', {}).get('split')} "
             f"({p.get('dataset', {}).get('source')}), {len(p.get('sample_ids', {}).get('clean', []))} clean samples",
             f"- device: {p.get('device_name')}, dtype {p.get('dtype')}",
             f"- corruptions: {p.get('corruption_implementation')}",
             "- versions: " + ", ".join(f"{k} {v[k]}" for k in sorted(v))]
    for name, m in sorted(p.get("models", {}).items()):
        lines.append(f"- `{name}`: {m.get('arch')} / {m.get('attention')}, sha256 `{m.get('sha256', '')[:12]}`")
    return lines


def render_markdown(results: Results, output: Optional[Path] = None) -> str:
    t = compute_tables(results)
    name = results.provenance.get("suite", {}).get("name", "results")
    parts = [f"# questbench leaderboard: {name}", ""]
    for title, df, notes in sections(t, results):
        parts += [f"## {title}", "", _md_table(df), ""]
        parts += [f"> {n}" for n in notes] + ([""] if notes else [])
    if t.flags:
        parts += ["## Flags", ""] + [f"- {f}" for f in t.flags] + [""]
    if output is not None:
        from .plots import write_plots
        for title, rel in write_plots(t, output):
            parts += [f"![{title}]({rel})", ""]
    parts += ["## Provenance", ""] + provenance_lines(results) + [""]
    return "\n".join(parts)


def render_csv(results: Results) -> str:
    """Long, sorted, fixed-precision csv: the same results always give a byte-identical file."""
    t = compute_tables(results)
    nan = float("nan")
    rows = []
    for _, r in t.clean.iterrows():
        rows.append(("clean", r.model, r.attention, "top1", "", r.top1, r.n, r.ci_low, r.ci_high, nan, nan))
    corr_n = t.severity.groupby("model").n.first() if "n" in t.severity else {}
    for _, r in t.corruptions.iterrows():
        for c in t.corruptions.columns:
            if c not in ("model", "attention"):
                rows.append(("corruption_error_pct", r.model, r.attention, c, "", r[c], corr_n.get(r.model, ""),
                             nan, nan, nan, nan))
    for _, r in t.severity.iterrows():
        rows.append(("corruption_accuracy_pct", r.model, "", f"{r.corruption}/{r.severity}", "", r.accuracy, r.n,
                     nan, nan, nan, nan))
    for _, r in t.attacks.iterrows():
        rows.append(("robust_accuracy_pct", r.model, r.attention, r.setting, f"{r.eps:.6g}", r.robust, r.n,
                     nan, nan, nan, nan))
    for _, r in t.pairs.iterrows():
        rows.append(("pair_delta_pp", r.model, r.baseline, f"{r.evaluation}: {r.setting}", "", r.delta_pp,
                     r.n_images, r.ci_low, r.ci_high, r.p_value, r.p_holm))
    for _, r in t.seeds.iterrows():
        rows.append(("seeds_mean_delta_pp", r.attention, f"{r.n_pairs} pairs", f"{r.evaluation}: {r.setting}", "",
                     r.delta_pp, r.n_images, r.ci_low, r.ci_high, nan, nan))
    rows.sort(key=lambda x: tuple(str(v) for v in x[:5]))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["table", "model", "attention_or_baseline", "metric", "eps", "value", "n", "ci_low", "ci_high",
                "p_value", "p_holm", "resolves_5pp"])
    num = lambda v: "" if v == "" or pd.isna(v) else f"{float(v):.6f}"  # noqa: E731
    for r in rows:
        resolves = "" if r[6] == "" or pd.isna(r[6]) else str(resolves_5pp(int(r[6]))).lower()
        w.writerow([*r[:5], num(r[5]), r[6], *(num(v) for v in r[7:]), resolves])
    return buf.getvalue()


_RICH_MAX_COLUMNS = 8


def render_rich(results: Results, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=max(Console().width, 160))
    t = compute_tables(results)
    for title, df, notes in sections(t, results):
        if "Paired" in title:  # the terminal view keeps what a reader needs; md/csv carry everything
            df = df[["model", "evaluation", "setting", "delta (pp)", "95% CI (pp)", "p", "p (Holm)", "n"]]
        table = Table(title=title, title_justify="left")
        if "attention" in df.columns and len(df.columns) > _RICH_MAX_COLUMNS and len(df) <= _RICH_MAX_COLUMNS:
            # per-corruption / per-attack tables are too wide for a terminal: models become the columns
            table.add_column("", justify="left")
            for m, a in zip(df.model, df.attention):
                table.add_column(f"{m}\n({a})", justify="right")
            for c in (c for c in df.columns if c not in ("model", "attention")):
                table.add_row(str(c), *(_fmt(v) for v in df[c]))
        else:
            for c in df.columns:
                table.add_column(str(c), justify="left" if c in ("model", "attention", "baseline", "evaluation",
                                                                   "setting") else "right")
            for _, r in df.iterrows():
                table.add_row(*(_fmt(r[c]) for c in df.columns))
        console.print(table)
        for n in notes:
            console.print(f"[dim]{n}[/dim]")
    for f in t.flags:
        console.print(f"[yellow]flag:[/yellow] {f}")


def leaderboard(results_dir, fmt: str = "md", output: Optional[str] = None) -> Optional[str]:
    if fmt not in FORMATS:
        raise QuestbenchError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if output is not None:
        from ..models import check_output_file
        check_output_file(output)
    results = load_results(results_dir)
    if results.samples.empty and results.diagnostics.empty:
        raise QuestbenchError(f"{results_dir} holds no finished jobs")
    if fmt == "rich":
        render_rich(results)
        return None
    out_path = Path(output) if output else None
    text = render_markdown(results, out_path) if fmt == "md" else render_csv(results)
    if out_path is not None:
        from ..models import atomic_write_bytes
        atomic_write_bytes(out_path, text.encode())
    return text
