"""Leaderboards from a results folder: markdown (with plots beside it), rich, and deterministic csv."""
from __future__ import annotations

import csv
import io
import re
import textwrap
from pathlib import Path
from typing import Optional

import pandas as pd

from ..errors import QuestbenchError
from ..store.results import Results, load_results
from ..stats.metrics import MIN_N_5PP, min_sign_flip_p, resolves_5pp
from .compare import AGGREGATE, RELATIVE
from ..config.labels import budget_label, eps_label
from .checks import CHECK_NOTES
from .tables import Tables, compute_tables

FORMATS = ("md", "rich", "csv", "html")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


CORRUPTION_SUMMARY_KEYS = ("model", "attention", "summary", "relative_mce", "relative", "clean_same_images")
SMALL_N_NOTE = (f"n* : fewer than {MIN_N_5PP} samples, so a 95% interval on one accuracy is wider than +-5 pp: too "
                "few to resolve a 5 pp difference; never used for ranking.")


def _n_label(n: int) -> str:
    return f"n={n}" if resolves_5pp(n) else f"n={n}*"


def short_names(models) -> dict[str, str]:
    """Model names without the prefix they all share ('fmnist-vit-standard-s0' -> 'standard-s0'), for column
    headers; the full names stay in the row-wise tables and the provenance."""
    models = list(models)
    if len(models) < 2:
        return {m: m for m in models}
    prefix = models[0]
    for m in models[1:]:
        while not m.startswith(prefix):
            prefix = prefix[:-1]
    prefix = prefix[: prefix.rfind("-") + 1] if "-" in prefix else ""
    return {m: m[len(prefix):] or m for m in models}


def _mark(value: float, n: int) -> str:
    return f"{value:.2f}" + ("" if resolves_5pp(n) else "*")


def _compact_sweep_names(sweeps) -> dict[str, str]:
    """'PGD-10 Linf (step eps/4)' -> 'PGD-10' where that stays unambiguous (the sweep table has the details)."""
    short = {s: s.split(" (")[0].replace(" Linf", "") for s in sweeps}
    return short if len(set(short.values())) == len(short) else {s: s for s in sweeps}


def _main_points(att: pd.DataFrame) -> pd.DataFrame:
    """Each attack sweep at its largest eps: the number a headline reports (worst-case excluded). The largest eps
    is the sweep's, not each model's: a model without it (a missing job) gets no point, never a smaller eps's."""
    att = att[att.attack != "worst-case"]
    top = att.groupby("sweep").eps.transform("max")
    return att[att.eps == top]


def headline(t: Tables) -> tuple[str, pd.DataFrame, list[str]]:
    """One row per model: clean top-1, corruption error, robust accuracy at each attack's largest eps, each
    header with its n; ranked by the strongest attack whose n resolves 5 pp, else corruptions, else clean."""
    models = list(t.clean.model) if not t.clean.empty else sorted(
        set(t.corruptions.get("model", [])) | set(t.attacks.get("model", [])))
    meta = {}
    for df in (t.clean, t.corruptions, t.attacks):
        if not df.empty:
            meta.update(dict(zip(df.model, df.attention)))
    table = pd.DataFrame({"model": models, "attention": [meta.get(m, "") for m in models]})
    ranking: list[tuple[str, bool]] = []  # (column, higher is better), in order of preference
    if not t.clean.empty:
        n = int(t.clean.n.max())
        col = f"clean (n={n})" + ("" if resolves_5pp(n) else "*")
        table[col] = table.model.map(dict(zip(t.clean.model, t.clean.top1)))
        ranking.append((col, True))
    if not t.corruptions.empty:
        n_img = int(t.severity.n.max()) if "n" in t.severity else 0
        short = "mCE" if t.corruption_metric.startswith("mCE") else "corr. error"
        col = f"{short} (n={n_img})" + ("" if resolves_5pp(n_img) else "*")
        table[col] = table.model.map(dict(zip(t.corruptions.model, t.corruptions.summary)))
        ranking.insert(0, (col, False))
        rel = "relative_mce" if short == "mCE" else "relative"
        if rel in t.corruptions and t.corruptions[rel].notna().any():
            table[f"rel. {short} (n={n_img})" + ("" if resolves_5pp(n_img) else "*")] = \
                table.model.map(dict(zip(t.corruptions.model, t.corruptions[rel])))
    if not t.attacks.empty:
        main = _main_points(t.attacks)
        compact = _compact_sweep_names(main.sweep.unique())
        for sweep, g in sorted(main.groupby("sweep", sort=False), key=lambda kv: -kv[1].n.max()):
            n = int(g.n.max())
            col = f"{compact[sweep]} {budget_label(g.attack.iloc[0], g.eps.max())} (n={n})" + (
                "" if resolves_5pp(n) else "*")
            table[col] = table.model.map(dict(zip(g.model, g.robust))).astype(object).where(
                table.model.isin(g.model), "missing")
            ranking.insert(0 if resolves_5pp(n) else len(ranking), (col, True))
    usable = [(c, up) for c, up in ranking if not c.endswith("*")] or ranking
    rank_col, up = usable[0]
    table = table.sort_values([rank_col, "model"], ascending=[not up, True], na_position="last",
                              key=lambda c: pd.to_numeric(c, errors="coerce") if c.name == rank_col else c
                              ).reset_index(drop=True)
    notes = [f"Ranked by {rank_col} ({'higher' if up else 'lower'} is better). Accuracies in %"
             + (f"; corruption error is {t.corruption_metric}" if t.corruption_metric else "")
             + ("; attacks at the largest budget of each sweep (the sweeps are below)." if not t.attacks.empty
                else ".")]
    if any(c.startswith("rel. ") for c in table.columns):
        notes.append("rel.: corruption error minus the model's own clean error on the same images (relative "
                     "corruption error), so a model that is better on clean images does not read as more robust.")
    if "clean_same_images" in t.corruptions:
        notes.append("Clean accuracy on the corruption images: " + ", ".join(
            f"{m} {v:.2f}" for m, v in zip(t.corruptions.model, t.corruptions.clean_same_images) if pd.notna(v)) + ".")
    if not t.attacks.empty:
        main = _main_points(t.attacks)
        notes.append("Clean accuracy on the attack images (each sweep's samples): " + "; ".join(
            f"{sweep}: " + ", ".join(f"{m} {c:.2f}" for m, c in zip(g.model, g.clean))
            for sweep, g in main.groupby("sweep", sort=True)) + ".")
    if any(c.endswith("*") for c in table.columns):
        notes.append(SMALL_N_NOTE)
    return "Headline", table, notes + t.notes


def sweep_table(t: Tables) -> tuple[str, pd.DataFrame, list[str]]:
    """Robust accuracy, one row per model and eps, one column per attack sweep (n in the header)."""
    att = t.attacks[t.attacks.norm != "patch"]
    cols = {}
    for sweep, g in att.groupby("sweep", sort=False):
        ns = sorted(set(int(x) for x in g.n))
        n_text = f"n={ns[0]}" if len(ns) == 1 else "n=" + "/".join(map(str, ns))
        cols[sweep] = f"{sweep} ({n_text})" + ("" if all(resolves_5pp(n) for n in ns) else "*")
    order = [s for s in dict.fromkeys(att.sort_values(["attack", "norm"]).sweep) if not s.startswith("worst")] + \
        [s for s in dict.fromkeys(att.sweep) if s.startswith("worst")]
    rows = []
    for (model, eps), g in att.groupby(["model", "eps"], sort=True):
        row = {"model": model, "eps": eps_label(eps)}
        for _, r in g.iterrows():
            row[cols[r.sweep]] = _mark(r.robust, int(r.n))
        rows.append(row)
    df = pd.DataFrame(rows, columns=["model", "eps"] + [cols[s] for s in order]).fillna("-")
    notes = ["Robust accuracy (%), one row per eps; eps = 0 is the clean anchor of each sweep."]
    if (att.attack == "worst-case").any():
        notes.append("worst-case: a sample counts as robust only if it survives every attack run at that norm and "
                     "eps, on the samples all of them saw (so its n is the smallest of theirs).")
    if not att.n.map(resolves_5pp).all():
        notes.append(SMALL_N_NOTE + " Cells from such n carry a *.")
    return "Attack sweeps", df, notes


def corruption_detail(t: Tables) -> tuple[str, pd.DataFrame, list[str]]:
    """Error (%) per corruption averaged over severities: corruptions as rows, models as columns."""
    from ..stats.metrics import ALL_CORRUPTIONS
    names = short_names(t.corruptions.model)
    present = [c for c in ALL_CORRUPTIONS if c in t.corruptions.columns] + \
        [c for c in t.corruptions.columns if c not in ALL_CORRUPTIONS and c not in CORRUPTION_SUMMARY_KEYS]
    df = pd.DataFrame({"corruption": present})
    for _, r in t.corruptions.iterrows():
        df[names[r.model]] = [r[c] for c in present]
    legend = ", ".join(f"{s} = {m}" for m, s in names.items() if s != m)
    notes = ["Error (%) per corruption, averaged over its severities; lower is better."] + \
        ([f"Columns: {legend}."] if legend else [])
    return "Corruptions in detail", df, notes


def shift_table(results: Results) -> Optional[tuple[str, pd.DataFrame, list[str]]]:
    """Top-1 (%) on each distribution-shift test set, one row per model, the set's n in its header."""
    s = results.samples
    sh = s[s.evaluation == "shift"]
    if sh.empty:
        return None
    df = pd.DataFrame({"model": sorted(sh.model.unique())})
    df["attention"] = df.model.map(sh.groupby("model").attention.first())
    for name, g in sorted(sh.groupby("setting")):
        n = int(g.groupby("model").size().max())
        df[f"{name} (n={n})" + ("" if resolves_5pp(n) else "*")] = df.model.map(100 * g.groupby("model").correct.mean())
    notes = ["Top-1 (%) under each set's published protocol: ImageNet-A and -R mask the 1000-way logits to their 200 "
             "classes; ImageNet-ReaL counts a prediction correct when it is in the image's ReaL label set and "
             "leaves out images without one; Sketch and V2 are 1000-way."]
    excluded = results.provenance.get("shifts", {}).get("imagenet-real", {}).get("excluded_without_labels")
    if excluded:
        notes.append(f"ImageNet-ReaL: {excluded} image(s) without a ReaL label left out.")
    return "Distribution shift", df, notes


def _patch_samples(results: Results) -> pd.DataFrame:
    s = results.samples
    p = s[(s.evaluation == "attack") & (s.attack == "patch")] if "attack" in s else s.iloc[0:0]
    return p.assign(loss=[x.split("/")[1] for x in p.setting],
                    steps=[int(re.search(r"steps=(\d+)", x).group(1)) if "steps=" in x else 0 for x in p.setting])


def _arrow(a: float, b: float, fmt: str) -> str:
    return f"{a:{fmt}} -> {b:{fmt}}"


def patch_table(results: Results) -> Optional[tuple[str, pd.DataFrame, list[str]]]:
    """Patch attacks: robust accuracy and what happened to attention, per model, loss and patch count."""
    p = _patch_samples(results)
    if p.empty:
        return None
    reached = "reached_mass_clean" in p
    rows = []
    for (model, loss, k), g in p.groupby(["model", "loss", "eps"], sort=True):
        n = len(g)
        row = {"model": model, "loss": loss, "patches": int(k), "robust %": _mark(100 * g.correct.mean(), n),
               "patch mass %": _arrow(100 * g.patch_mass_clean.mean(), 100 * g.patch_mass_adv.mean(), ".1f"),
               "patch |k|": _arrow(g.patch_k_norm_clean.mean(), g.patch_k_norm_adv.mean(), ".2f")}
        if reached:
            row.update({"reached mass %": _arrow(100 * g.reached_mass_clean.mean(), 100 * g.reached_mass_adv.mean(),
                                                 ".1f"),
                        "reached |k|": _arrow(g.reached_k_norm_clean.mean(), g.reached_k_norm_adv.mean(), ".2f")})
        rows.append({**row, "n": n})
    df = pd.DataFrame(rows)
    df = df[df.patches > 0].reset_index(drop=True) if (df.patches > 0).any() else df
    notes = ["Adversarial patches aligned to the token grid; clean -> attacked. 'patch mass': the attention all "
             "queries give the patch tokens (mean over layers, heads and queries); '|k|': those tokens' mean key norm "
             "before the kind's normalization (QUEST's logits ignore it)." + (
                 " 'reached': the same for the tokens outside the patch whose embedding the patch changes through "
                 "the stem (its receptive field; found by perturbing the patch pixels)." if reached else ""),
             "With the attention loss the attack maximizes the patch mass; with ce the cross-entropy. Robust "
             "accuracy counts a sample only if it was correct before the attack and no iterate of any restart "
             "fooled it; the attacked attention is that of the final iterate of the restart that decided it."]
    if not all(resolves_5pp(int(n)) for n in df.n):
        notes.append(SMALL_N_NOTE)
    return "Attention attacks (adversarial patches)", df, notes


CONVERGED_PP = 1.0  # robust accuracy may still fall by less than this from half the steps to all of them


def patch_convergence(results: Results) -> Optional[tuple[str, pd.DataFrame, list[str]]]:
    """Robust accuracy against the number of steps, read off each sample's first-success step (over all
    restarts), so one run shows whether the attack had converged."""
    p = _patch_samples(results)
    p = p[p.eps > 0] if not p.empty else p
    if p.empty or "first_success_step" not in p:
        return None
    total = int(p.steps.max())
    grid = sorted(x for x in {0, 1, 2, 5, 10, 20, 50, 100, total // 2, total} if x <= total)
    rows = []
    for (model, loss, k, steps), g in p.groupby(["model", "loss", "eps", "steps"], sort=True):
        first = pd.to_numeric(g.first_success_step, errors="coerce")
        ok = g.clean_correct.astype(bool)
        row = {"model": model, "loss": loss, "patches": int(k)}
        for t in grid:
            row[f"{t} steps"] = "" if t > steps else f"{100 * (ok & ~(first <= t)).mean():.1f}"
        drop = 100 * ((ok & ~(first <= steps // 2)).mean() - (ok & ~(first <= steps)).mean())
        row["last half (pp)"] = f"{-drop:+.1f}"
        row["converged"] = "yes" if drop < CONVERGED_PP else "no"
        rows.append(row)
    notes = [f"Robust accuracy (%) had the attack stopped after that many steps (step 0: the random start), from "
             f"each sample's first-success step over all restarts. 'last half': the change from half the steps to "
             f"all of them; 'converged' when robust accuracy fell by less than {CONVERGED_PP:g} pp over that half."]
    return "Patch attack convergence", pd.DataFrame(rows), notes


def mechanism_table(results: Results) -> Optional[tuple[str, pd.DataFrame, list[str]]]:
    """Attention diagnostics per model, averaged over layers: the paper's mechanism in numbers."""
    d = results.diagnostics
    if d.empty:
        return None
    g = d.groupby(["model", "attention"], sort=True)
    df = pd.DataFrame({
        "entropy": g.entropy.mean(), "H / log N": (d.entropy / d.max_entropy).groupby(
            [d.model, d.attention]).mean(),
        "max w": g.max_attention.mean(), "|q|": g.q_norm_mean.mean(), "|k|": g.k_norm_mean.mean(),
        "|k| max": g.k_norm_max.max(), "layers": g.layer.nunique()}).reset_index()
    n = len(results.provenance.get("sample_ids", {}).get("diagnostics", []))
    notes = [f"Clean inputs ({n} images), means over layers: attention entropy (nats) and its ratio to uniform "
             "attention's log N, the largest attention weight (max w), query and key norms (|k| max: the largest "
             "over layers). Norms are of the "
             "projected queries and keys before the kind's normalization: QUEST's logits do not depend on |k|, "
             "only on |q| and the key direction. Corrupted and attacked inputs are not recorded."]
    return "Attention mechanism", df, notes


def sections(t: Tables, results: Results) -> list[tuple[str, pd.DataFrame, list[str]]]:
    out = []
    if not (t.clean.empty and t.corruptions.empty and t.attacks.empty):
        out.append(headline(t))
    if not t.clean.empty:
        df = t.clean.assign(**{"top-1 (%)": t.clean.top1, "95% CI": [f"{a:.1f}-{b:.1f}" for a, b in
                                                                       zip(t.clean.ci_low, t.clean.ci_high)],
                               "n": [_n_label(n).removeprefix("n=") for n in t.clean.n]})
        out.append(("Clean accuracy", df[["model", "attention", "top-1 (%)", "95% CI", "n"]], []))
    shift = shift_table(results)
    if shift is not None:
        out.append(shift)
    if not t.corruptions.empty:
        out.append(corruption_detail(t))
    if not t.attacks.empty and (t.attacks.norm != "patch").any():
        out.append(sweep_table(t))
    for table in (patch_table(results), patch_convergence(results)):
        if table is not None:
            out.append(table)
    checks = t.checks
    if checks is not None:
        flagged = checks[0][checks[0]["flags"] > 0].model.tolist()
        verdict = (f"Flagged: {', '.join(flagged)} (the sentences under Flags say which check and by how much)."
                   if flagged else "Every check passed for every model.")
        out.append(("Attack checks", checks[0], CHECK_NOTES + [verdict]))
    mech = mechanism_table(results)
    if mech is not None:
        out.append(mech)
    if not t.pairs.empty:
        # per-corruption settings stay in the csv and `questbench compare`; the table keeps what is claimed
        pairs = t.pairs[(t.pairs.evaluation != "corruption") | t.pairs.setting.isin([AGGREGATE, RELATIVE])]
        notes = ["Model minus its standard-attention sibling on the same images. One row per setting: exact "
                 "McNemar test, paired bootstrap over images. Rows 'all' aggregate a whole sweep (eps > 0) or "
                 "every corruption setting with the image as the unit (cluster bootstrap, sign-flip test over "
                 "images), never the rows; 'all-relative' is each model's drop from clean to corrupted accuracy "
                 "on the same images. p Holm: adjusted within the headline family (clean, the 'all' and "
                 "'all-relative' rows) and within each evaluation's settings."]
        if not pairs.n_images.map(resolves_5pp).all():
            notes.append(SMALL_N_NOTE)
        for (model, base), df in pairs.groupby(["model", "baseline"], sort=True):
            df = pd.DataFrame({"evaluation": df.evaluation, "setting": df.setting,
                               "standard": [f"{x:.2f}" for x in df.baseline_acc],
                               "model": [f"{x:.2f}" for x in df.model_acc],
                               "delta pp": [f"{d:+.2f}" for d in df.delta_pp],
                               "95% CI": [f"{a:+.1f} to {b:+.1f}" for a, b in zip(df.ci_low, df.ci_high)],
                               "p": [f"{p:.2g}" for p in df.p_value], "p Holm": [f"{p:.2g}" for p in df.p_holm],
                               "n": [_n_label(n).removeprefix("n=") for n in df.n_images]})
            out.append((f"Paired: {model} minus {base}", df, notes))
            notes = []
    if not t.seeds.empty:
        for kind, s in t.seeds.groupby("attention", sort=True):
            df = pd.DataFrame({"evaluation": s.evaluation, "setting": s.setting,
                               "per-pair deltas pp": s.per_pair_delta_pp,
                               "mean pp": [f"{d:+.2f}" for d in s.delta_pp],
                               "95% CI": [f"{a:+.1f} to {b:+.1f}" for a, b in zip(s.ci_low, s.ci_high)],
                               "p": [f"{p:.2g}" for p in s.p_value],
                               "finding": [seed_finding(r) for _, r in s.iterrows()],
                               "n": [_n_label(n).removeprefix("n=") for n in s.n_images]})
            k = int(s.n_pairs.max())
            notes = [f"{k} trained pairs ({s.pairs.iloc[0]}), the pair is the unit: the mean of the per-pair "
                     f"deltas with a Student t interval ({k - 1} df) whose variance adds the variation of the images "
                     "the pairs share; p is the larger of that t test's and the exact sign-flip test's over the "
                     f"{k} pairs."
                     + (" 'all-relative' is the drop from clean to corrupted accuracy on the same images (a "
                        "positive delta: a smaller drop than standard), so a clean offset does not read as "
                        "robustness." if (s.setting == RELATIVE).any() else "")
                     + " Coverage of the interval is checked by simulation (tests/test_seed_inference.py)."]
            if k < 6:
                notes.append(f"With {k} pairs the sign-flip test cannot give p below {min_sign_flip_p(k):.3g}: no "
                             "difference can be established at p < 0.05 with this many pairs, whatever the data.")
            out.append((f"Across seeds: {kind} minus standard ({k} pairs)", df, notes))
    return out


def seed_finding(row) -> str:
    """What an across-seed row lets a reader say: 'QUEST better/worse' only when p < 0.05 (which implies that
    the interval excludes zero), else 'not established with k pairs'."""
    if row.p_value < 0.05:
        return "better" if row.delta_pp > 0 else "worse"
    return f"not established ({int(row.n_pairs)} pairs)"


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
    if not results.jobs.empty and "wall_s" in results.jobs:
        lines.append(f"- run time: {float(results.jobs.wall_s.sum()):.1f} s in {len(results.jobs)} jobs (the jobs' "
                     "own wall times, summed; ranks running side by side make the run shorter)")
    for name, m in sorted(p.get("models", {}).items()):
        lines.append(f"- `{name}`: {m.get('arch')} / {m.get('attention')}, sha256 `{m.get('sha256', '')[:12]}`")
    return lines


def render_markdown(results: Results, output: Optional[Path] = None) -> str:
    t = compute_tables(results)
    name = results.provenance.get("suite", {}).get("name", "results")
    parts = [f"# questbench leaderboard: {name}", ""]
    for title, df, notes in sections(t, results):
        parts += [f"## {title}", "", _md_table(df), ""]
        for n in notes:  # prose wrapped to 100 columns of source, like the tables
            parts += [f"> {line}" for line in textwrap.wrap(n, 98)] + [">"]
        if notes:
            parts[-1] = ""
    if results.missing_jobs:
        parts += ["## Missing jobs", "", f"{len(results.missing_jobs)} planned job(s) have no results in this "
                  "folder (a killed or unfinished run): cells that need them read 'missing', and paired aggregates "
                  "cover only the settings both models have. Run the suite again into this folder to finish them.",
                  ""] + [f"- `{j}`" for j in results.missing_jobs] + [""]
    if t.flags:
        parts += ["## Flags", ""] + [f"- {f}" for f in t.flags] + [""]
    if output is not None:
        from .plots import write_plots
        for title, rel in write_plots(t, output, results.diagnostics):
            parts += [f"![{title}]({rel})", ""]
    parts += ["## Provenance", ""] + provenance_lines(results) + [""]
    return "\n".join(parts)


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
    s = results.samples
    checks = t.checks
    for r in (checks[1] if checks is not None else []):
        rows.append({"table": "check", "model": r["model"], "attention": r["attention"], "evaluation": r["check"],
                     "setting": r["setting"], "n": r["n"], "accuracy_pct": r["accuracy_pct"],
                     "baseline_accuracy_pct": r["baseline_accuracy_pct"], "p_value": r["p_value"],
                     "flag": r["flag"]})
    for (model, name), g in s[s.evaluation == "shift"].groupby(["model", "setting"]):
        rows.append({"table": "shift", "model": model, "attention": g.attention.iloc[0], "evaluation": "shift",
                     "setting": name, "n": len(g), "accuracy_pct": 100 * g.correct.mean()})
    for _, r in results.diagnostics.iterrows():
        rows.append({"table": "attention", "model": r.model, "attention": r.attention, "evaluation": "clean",
                     "setting": r.layer, "n": len(results.provenance.get("sample_ids", {}).get("diagnostics", [])),
                     "entropy_nats": r.entropy, "entropy_ratio": r.entropy / r.max_entropy,
                     "max_attention": r.max_attention, "q_norm_mean": r.q_norm_mean, "k_norm_mean": r.k_norm_mean,
                     "k_norm_max": r.k_norm_max})
    df = pd.DataFrame(rows, columns=CSV_COLUMNS)
    df["resolves_5pp"] = [resolves_5pp(int(n)) if pd.notna(n) else None for n in df.n]
    return df


def render_csv(results: Results) -> str:
    """The tidy table as csv, sorted, fixed precision: the same results always give a byte-identical file."""
    df = csv_rows(results)
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
                out.append(str(v))
        w.writerow(out)
    return buf.getvalue()


_TEXT_COLUMNS = ("model", "attention", "baseline", "evaluation", "setting", "corruption", "eps")


def render_rich(results: Results, console=None) -> None:
    """The leaderboard for a terminal of any width: tables take the console's width (never a forced one) and
    fold long cells onto further lines instead of cutting them."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    t = compute_tables(results)
    for title, df, notes in sections(t, results):
        # long evaluation labels become sub-titles, so a paired table fits 80 columns
        parts = [(f"{title} / {ev}", g.drop(columns="evaluation")) for ev, g in df.groupby("evaluation", sort=False)] \
            if "evaluation" in df.columns else [(title, df)]
        for sub, part in parts:
            table = Table(title=sub, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
            sizes = []
            for c in part.columns:
                text = c in _TEXT_COLUMNS  # names stay whole on one line
                m = re.search(r" \(n=(\d+)\)(\*?)$", str(c))  # n moves to a line under the table
                header = str(c)[:m.start()] + m.group(2) if m else str(c)
                if m:
                    sizes.append(f"{header.rstrip('*')} {m.group(1)}{m.group(2)}")
                table.add_column(header, justify="left" if text else "right", overflow="fold", no_wrap=text)
            for _, r in part.iterrows():
                table.add_row(*(_fmt(r[c]) for c in part.columns))
            console.print(table)
            if sizes:
                console.print("n: " + ", ".join(sizes))
        for n in notes:
            console.print(f"[dim]{n}[/dim]")
    for f in t.flags:
        console.print(f"[yellow]flag:[/yellow] {f}")


def leaderboard(results_dir, fmt: str = "md", output: Optional[str] = None, images_per_cell: int = 6
                ) -> Optional[str]:
    if fmt not in FORMATS:
        raise QuestbenchError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if output is not None:
        from .._io import check_output_file
        check_output_file(output)
    results = load_results(results_dir)
    if results.samples.empty and results.diagnostics.empty:
        raise QuestbenchError(f"{results_dir} holds no finished jobs")
    if fmt == "rich":
        render_rich(results)
        return None
    out_path = Path(output) if output else None
    if fmt == "html":
        from .html import render_html
        text = render_html(results, images_per_cell)
    else:
        text = render_markdown(results, out_path) if fmt == "md" else render_csv(results)
    if out_path is not None:
        from .._io import atomic_write_bytes
        atomic_write_bytes(out_path, text.encode())
    return text
