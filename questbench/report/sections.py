"""The leaderboard's content, renderer-neutral: each table as (title, cells, notes) from the aggregate tables;
markdown, html and the terminal show these, the csv holds their numbers."""
from __future__ import annotations

from typing import NamedTuple, Optional

import pandas as pd

from ..config.labels import budget_label, eps_label
from ..stats.metrics import MIN_N_5PP, min_sign_flip_p, resolves_5pp
from ..kinds import KINDS
from .checks import CHECK_NOTES
from .compare import AGGREGATE, RELATIVE
from .tables import CONVERGED_PP, CORRUPTION_SUMMARY_KEYS, Tables

class Section(NamedTuple):
    """One table of the leaderboard. ``pair``: (model, its standard sibling) of a paired table, for a renderer
    that links its rows to that pair's images (names are data: never recovered from the title)."""

    title: str
    table: pd.DataFrame
    notes: list[str]
    pair: Optional[tuple[str, str]] = None


# the kinds whose rows the report tabulates itself (the headline reads several of them at once); every other kind
# brings its own tables (questbench.kinds.base.Kind.tables)
HEADLINE_KINDS = ("clean", "shift", "corruption", "attack", "check", "diagnostics")

def cell_text(v) -> str:
    """A table cell as every renderer shows it: floats to two decimals, the rest as written."""
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


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


def _or_missing(col: pd.Series) -> pd.Series:
    """A headline cell without its number (the model's job is missing, or its aggregate is incomplete)."""
    return col.astype(object).where(col.notna(), "missing")


def headline(t: Tables) -> tuple[str, pd.DataFrame, list[str]]:
    """One row per model: clean top-1, corruption error, robust accuracy at each attack's largest eps, each
    header with its n; ranked by the strongest attack whose n resolves 5 pp, else corruptions, else clean."""
    # every model with any result: one without its clean job keeps its row, its clean cell reads 'missing'
    models = list(t.clean.model) + sorted((set(t.corruptions.get("model", [])) | set(t.attacks.get("model", [])))
                                          - set(t.clean.get("model", [])))
    meta = {}
    for df in (t.clean, t.corruptions, t.attacks):
        if not df.empty:
            meta.update(dict(zip(df.model, df.attention)))
    table = pd.DataFrame({"model": models, "attention": [meta.get(m, "") for m in models]})
    ranking: list[tuple[str, bool]] = []  # (column, higher is better), in order of preference
    if not t.clean.empty:
        n = int(t.clean.n.max())
        col = f"clean (n={n})" + ("" if resolves_5pp(n) else "*")
        table[col] = _or_missing(table.model.map(dict(zip(t.clean.model, t.clean.top1))))
        ranking.append((col, True))
    if not t.corruptions.empty:
        n_img = int(t.severity.n.max()) if "n" in t.severity else 0
        short = "mCE" if t.corruption_metric.startswith("mCE") else "corr. error"
        col = f"{short} (n={n_img})" + ("" if resolves_5pp(n_img) else "*")
        table[col] = _or_missing(table.model.map(dict(zip(t.corruptions.model, t.corruptions.summary))))
        ranking.insert(0, (col, False))
        rel = "relative_mce" if short == "mCE" else "relative"
        if rel in t.corruptions and t.corruptions[rel].notna().any():
            table[f"rel. {short} (n={n_img})" + ("" if resolves_5pp(n_img) else "*")] = \
                _or_missing(table.model.map(dict(zip(t.corruptions.model, t.corruptions[rel]))))
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
    from ..config.corruptions import ALL_CORRUPTIONS
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


def shift_section(t: Tables) -> Optional[tuple[str, pd.DataFrame, list[str]]]:
    """Top-1 (%) on each distribution-shift test set, one row per model, the set's n in its header."""
    sh = t.shifts
    if sh.empty:
        return None
    df = pd.DataFrame({"model": sorted(sh.model.unique())})
    df["attention"] = df.model.map(sh.groupby("model").attention.first())
    for name, g in sorted(sh.groupby("setting")):
        n = int(g.n.max())
        df[f"{name} (n={n})" + ("" if resolves_5pp(n) else "*")] = df.model.map(g.set_index("model").accuracy)
    notes = ["Top-1 (%) under each set's published protocol: ImageNet-A and -R mask the 1000-way logits to their 200 "
             "classes; ImageNet-ReaL counts a prediction correct when it is in the image's ReaL label set and "
             "leaves out images without one; Sketch and V2 are 1000-way."]
    if t.shift_excluded:
        notes.append(f"ImageNet-ReaL: {t.shift_excluded} image(s) without a ReaL label left out.")
    return "Distribution shift", df, notes


def _arrow(a: float, b: float, fmt: str) -> str:
    return f"{a:{fmt}} -> {b:{fmt}}"


def patch_section(t: Tables) -> Optional[tuple[str, pd.DataFrame, list[str]]]:
    """Patch attacks: robust accuracy and what happened to attention, per model, loss and patch count."""
    p = t.patches
    if p.empty:
        return None
    reached = "reached_mass_clean" in p
    rows = []
    for _, r in p.iterrows():
        n = int(r.n)
        row = {"model": r.model, "loss": r.loss, "patches": int(r.patches), "robust %": _mark(r.robust, n),
               "patch mass %": _arrow(r.patch_mass_clean, r.patch_mass_adv, ".1f"),
               "patch |k|": _arrow(r.patch_k_clean, r.patch_k_adv, ".2f")}
        if reached:
            row.update({"reached mass %": _arrow(r.reached_mass_clean, r.reached_mass_adv, ".1f"),
                        "reached |k|": _arrow(r.reached_k_clean, r.reached_k_adv, ".2f")})
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


def convergence_section(t: Tables) -> Optional[tuple[str, pd.DataFrame, list[str]]]:
    """Robust accuracy against the number of steps, so one run shows whether the attack had converged."""
    c = t.convergence
    if c.empty:
        return None
    grid = [x for x in c.columns if isinstance(x, int)]
    df = c[["model", "loss", "patches"]].copy()
    for step in grid:
        df[f"{step} steps"] = ["" if pd.isna(v) else f"{v:.1f}" for v in c[step]]
    df["last half (pp)"] = [f"{-d:+.1f}" for d in c.last_half_drop]
    df["converged"] = ["yes" if d < CONVERGED_PP else "no" for d in c.last_half_drop]
    notes = [f"Robust accuracy (%) had the attack stopped after that many steps (step 0: the random start), from "
             f"each sample's first-success step over all restarts. 'last half': the change from half the steps to "
             f"all of them; 'converged' when robust accuracy fell by less than {CONVERGED_PP:g} pp over that half."]
    return "Patch attack convergence", df, notes


def mechanism_section(t: Tables) -> Optional[tuple[str, pd.DataFrame, list[str]]]:
    """Attention diagnostics per model, averaged over layers: the paper's mechanism in numbers."""
    if t.mechanism.empty:
        return None
    notes = [f"Clean inputs ({t.n_diagnostics} images), means over layers: attention entropy (nats) and its ratio to "
             "uniform attention's log N, the largest attention weight (max w), query and key norms (|k| max: the "
             "largest over layers). Norms are of the projected queries and keys before the kind's normalization: "
             "QUEST's logits do not depend on |k|, only on |q| and the key direction. Corrupted and attacked inputs "
             "are not recorded."]
    return "Attention mechanism", t.mechanism, notes


def missing_jobs_text(n: int) -> str:
    """What every view says of planned jobs without results (the page, the html, the terminal of a run)."""
    return (f"{n} planned job(s) have no results in this folder (a killed or unfinished run): cells that need them "
            "read 'missing', and paired aggregates cover only the settings both models have. Run the suite again "
            "into this folder to finish them.")


def sections(t: Tables) -> list[Section]:
    """The leaderboard's tables in reading order: what every renderer shows."""
    return [s if isinstance(s, Section) else Section(*s) for s in _sections(t)]


def _sections(t: Tables) -> list:
    out = []
    if not (t.clean.empty and t.corruptions.empty and t.attacks.empty):
        out.append(headline(t))
    if not t.clean.empty:
        df = t.clean.assign(**{"top-1 (%)": t.clean.top1, "95% CI": [f"{a:.1f}-{b:.1f}" for a, b in
                                                                       zip(t.clean.ci_low, t.clean.ci_high)],
                               "n": [_n_label(n).removeprefix("n=") for n in t.clean.n]})
        out.append(("Clean accuracy", df[["model", "attention", "top-1 (%)", "95% CI", "n"]], []))
    shift = shift_section(t)
    if shift is not None:
        out.append(shift)
    if not t.corruptions.empty:
        out.append(corruption_detail(t))
    if not t.attacks.empty and (t.attacks.norm != "patch").any():
        out.append(sweep_table(t))
    for table in (patch_section(t), convergence_section(t)):
        if table is not None:
            out.append(table)
    checks = t.checks
    if checks is not None:
        out.append(("Attack checks", checks[0], CHECK_NOTES + [checks_verdict(checks)]))
    mech = mechanism_section(t)
    if mech is not None:
        out.append(mech)
    out += [sec for name, agg in t.kinds.items() for sec in KINDS[name].tables(agg)]
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
            if t.devices.get(model) != t.devices.get(base):  # joined folders: say where each side ran
                notes = notes + [f"{model} ran on {t.devices[model]}, {base} on {t.devices[base]} (results of "
                                 "several folders joined; the images and settings are the same)."]
            out.append(Section(f"Paired: {model} minus {base}", df, notes, (model, base)))
            notes = []
    seed_sections = []
    if not t.seeds.empty:
        primary = _primary_verdicts(t)
        for kind, s in t.seeds.groupby("attention", sort=True):
            findings = [primary.get((f"{kind} - standard", r.evaluation, r.setting)) or seed_finding(r)
                        for _, r in s.iterrows()]
            df = pd.DataFrame({"evaluation": s.evaluation, "setting": s.setting,
                               "per-pair deltas pp": s.per_pair_delta_pp, **_interval_cells(s),
                               "p": [f"{p:.2g}" for p in s.p_value], "finding": findings,
                               "n": [_n_label(n).removeprefix("n=") for n in s.n_images]})
            k = int(s.n_pairs.max())
            notes = [f"{k} trained pairs ({s.pairs.iloc[0]}), the pair is the unit: the mean of the per-pair "
                     f"deltas with a Student t interval ({k - 1} df) whose variance adds the variation of the images "
                     "the pairs share; p is the larger of that t test's and the exact sign-flip test's over the "
                     f"{k} pairs."
                     + (" 'all-relative' is the drop from clean to corrupted accuracy on the same images (a "
                        "positive delta: a smaller drop than standard), so a clean offset does not read as "
                        "robustness." if (s.setting == RELATIVE).any() else "")
                     + " Coverage of the interval is checked by simulation (tests/test_seed_inference.py)."
                     + (" A row that is a declared primary endpoint carries the study's verdict (Holm across the "
                        "endpoints, as under Study verdicts); every other finding is secondary: that row's own test "
                        "at 0.05, with no correction across the table's rows." if primary else
                        " Each finding is that row's own test at 0.05, with no correction across the table's rows.")]
            if k < 6:
                notes.append(f"With {k} pairs the sign-flip test cannot give p below {min_sign_flip_p(k):.3g}: no "
                             "difference can be established at p < 0.05 with this many pairs, whatever the data.")
            seed_sections.append((f"Across seeds: {kind} minus standard ({k} pairs)", df, notes))
    if not seed_sections:
        return out
    # a study of several seeds per kind opens with its answer: the verdicts, the contrasts between kinds, the
    # per-kind summaries; the per-model tables follow as detail
    lead = [sec for sec in (study_section(t), contrast_section(t)) if sec is not None]
    return lead + seed_sections + out


def _primary_verdicts(t: Tables) -> dict[tuple[str, str, str], str]:
    """(contrast, evaluation, setting) -> the study's verdict there, so that an across-seed row of a primary
    endpoint reads as the verdict table does rather than by its own unadjusted test."""
    return {(r.contrast, r.evaluation, r.setting): f"{r.verdict} (primary; p Holm {r.p_holm:.2g})"
            for r in t.study.itertuples()} if not t.study.empty else {}


def _interval_cells(df: pd.DataFrame) -> dict[str, list[str]]:
    return {"mean pp": [f"{d:+.2f}" for d in df.delta_pp],
            "95% CI": [f"{a:+.1f} to {b:+.1f}" for a, b in zip(df.ci_low, df.ci_high)]}


def _detectable_cell(d: float) -> str:
    return "none" if d == float("inf") else f"{d:.2f}"


def study_section(t: Tables) -> Optional[tuple[str, pd.DataFrame, list[str]]]:
    """The study's answer: a verdict per contrast and declared primary endpoint."""
    from ..stats.study import FACTORIAL_NOTE

    st = t.study
    if st.empty:
        return None
    df = pd.DataFrame({"contrast": st.contrast, "endpoint": st.endpoint, "setting": st.evaluation + " " + st.setting,
                       "pairs": st.n_pairs.astype(int), "images": st.n_images.astype(int), **_interval_cells(st),
                       "p Holm": [f"{p:.2g}" for p in st.p_holm],
                       "detectable pp": [_detectable_cell(d) for d in st.detectable_pp], "verdict": st.verdict})
    margin = t.margin_pp
    notes = [f"Primary endpoints declared in the suite before the run ({', '.join(dict.fromkeys(st.endpoint))}); "
             "every other table is secondary. A positive delta favours the first kind named (for 'corruption', a "
             "smaller drop from clean to corrupted accuracy). Verdict: better or worse when the difference test "
             "rejects at 0.05 after Holm across the endpoints of one contrast and the interval excludes zero; "
             + (f"equivalent when two one-sided t tests put the effect inside +-{margin:g} pp (Holm likewise); "
                if margin else "equivalent is not possible (the suite declares no margin_pp); ")
             + "otherwise inconclusive. 'detectable pp': the smallest true effect the test in use (t and exact "
             "sign-flip over the pairs) detects with 80% power at 0.05 / the number of endpoints (Holm's first "
             "step), given the spread the study observed between pairs; 'none' where the sign-flip floor 2 / 2^pairs "
             "is not below that level, so no effect of any size can be called better or worse."]
    if (st.family == "factorial").any():
        notes.append(FACTORIAL_NOTE)
    return "Study verdicts", df, notes


def contrast_section(t: Tables) -> Optional[tuple[str, pd.DataFrame, list[str]]]:
    """Every kind against every other kind and the factorial effects, at every aggregate and attack setting."""
    from ..stats.study import FACTORIAL_NOTE

    c = t.contrasts
    if c.empty:
        return None
    df = pd.DataFrame({"contrast": c.contrast, "evaluation": c.evaluation, "setting": c.setting,
                       "per-pair deltas pp": c.per_pair_delta_pp, **_interval_cells(c),
                       "p": [f"{p:.2g}" for p in c.p_value], "pairs": c.n_pairs.astype(int),
                       "n": [_n_label(int(n)).removeprefix("n=") for n in c.n_images]})
    notes = ["Kinds compared directly: per seed, the first kind's per-image delta against the seed's standard "
             "model minus the second kind's (standard cancels), then the same seed-level interval and p as the "
             "across-seed tables. Main effects: key normalization = ((QUEST - standard) + (QKNorm-HS - QNorm)) / 2, "
             "query normalization = ((QNorm - standard) + (QKNorm-HS - QUEST)) / 2; interaction = (QKNorm-HS - "
             "QNorm) - (QUEST - standard). Secondary: no multiplicity correction across this table."]
    if (c.family == "factorial").any():
        notes.append(FACTORIAL_NOTE)
    return "Contrasts between kinds", df, notes


def checks_verdict(checks) -> str:
    """The checks' summary sentence, with the power behind a pass: the smallest gap a comparison could flag."""
    from .checks import min_detectable_gap_pp
    flagged = checks[0][checks[0]["flags"] > 0].model.tolist()
    pooled = [r for r in checks[1] if r["check"].endswith("(pooled)")]
    flagged += [f"all models together ({r['check']})" for r in pooled if r["flag"]]
    if flagged:
        passed = "".join(f" {r['sentence']}" for r in pooled if not r["flag"])
        return f"Flagged: {', '.join(flagged)} (the sentences under Flags say which check and by how much).{passed}"
    ns = sorted({int(r["n"]) for r in checks[1] if r["check"] != "large budget" and r not in pooled})
    pooled_text = "".join(f" {r['sentence']}" for r in pooled)
    if not ns:
        return "Every check passed for every model." + pooled_text
    gaps = ", ".join(f"{min_detectable_gap_pp(n):.1f} pp at n = {n}" for n in ns)
    return (f"Every check passed for every model; a comparison can flag only a gap of at least {gaps} (every "
            f"discordant sample on one side), so a smaller gap passes unseen.{pooled_text}")


def seed_finding(row) -> str:
    """What an across-seed row lets a reader say: better or worse only when p < 0.05 (which implies that the
    interval excludes zero), else inconclusive beside the smallest effect those pairs could detect (80% power)."""
    from ..stats.study import detectable_effect

    if row.p_value < 0.05:
        return "better" if row.delta_pp > 0 else "worse"
    mde = detectable_effect(row.se, int(row.n_pairs)) if "se" in row else float("nan")
    if mde == float("inf"):
        return f"inconclusive ({int(row.n_pairs)} pairs: too few to detect any effect)"
    return f"inconclusive ({int(row.n_pairs)} pairs" + (f"; detectable {mde:.1f} pp)" if mde == mde else ")")
