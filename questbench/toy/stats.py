"""Statistics of the toy grid that do not hang on one threshold (no torch: reads runs.csv or a DataFrame).

The units that vary in the grid are the learning-rate x weight-decay cells, the data seeds and the init seeds;
a run is not an independent unit, and the lr x wd cells are a fixed design, not a sample. Differences between
kinds are paired within a (lr, wd, init seed, data seed) point, averaged per data seed over the cells and init
seeds, and get a Student t interval (k - 1 df) over the data seeds, the unit that was sampled: with the two data
seeds of the committed mean and split grids that is 1 df and a wide interval, with the five of the split-bias
grid 4 df. Only a grid of one data seed (the quick presets) falls back to an interval over the cells, which its
tables say. A claim that one kind is better needs an interval that excludes zero; otherwise
the kinds are reported as tied.

Threshold-free, primary: the distribution of conflict-set accuracy and of unbiased accuracy / Bayes. Success
rates are shown at 0.85, 0.90 and 0.95 x Bayes so a reader sees how much the threshold decides. Instability is
reported for the learning rates where some kind still learns (its success rate at 0.9 x Bayes >= 50%) and
separately for the others, where every kind fails and the flags say little about the kind.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from .common import PAPER_RATES

THRESHOLDS = (0.85, 0.90, 0.95)
COMPARISONS = (("quest", "standard"), ("qnorm", "standard"), ("quest", "qnorm"), ("qknorm_hs", "standard"),
               ("quest", "qknorm_hs"), ("qknorm_ds", "standard"), ("quest", "qknorm_ds"))
POINT = ["lr", "wd", "init_seed", "data_seed"]
MIN_DATA_SEEDS = 2  # from here on the data seed is the unit of every interval (t with k - 1 df)
DESIGNS = {  # preset -> (design name, what the model is)
    "split": ("split design", "queries and keys from each token's key part only, without bias, values from its "
              "value part (qkv weight masked block-wise); mean-pooled residual + attention output; "
              "Linear-GELU-Linear head"),
    "split-bias": ("split design with a learned qkv bias", "queries and keys from each token's key part only, "
                   "values from its value part (qkv weight masked block-wise), with a learned bias on q, k and v; "
                   "mean-pooled residual + attention output; Linear-GELU-Linear head"),
    "cls": ("cls design", "a token MLP embeds each token, a learned query token is prepended and reads the answer "
            "through one attention layer of the kind under test; a linear head on the query token's output (the "
            "model: `questbench/toy/cls_design.py`)"),
    "mean": ("mean design", "every token queries through one attention layer of the kind under test on a linear "
             "embedding; mean-pooled residual + attention output; Linear-GELU-Linear head"),
}


def design_of(preset: str) -> tuple[str, str]:
    """(design name, model description) of a preset: its name without "-quick"; any other preset is the mean design."""
    return DESIGNS.get(preset.removesuffix("-quick"), DESIGNS["mean"])


def unit_of(df: pd.DataFrame) -> str:
    """What the intervals run over for these runs: "data seeds" or "cells" (lr x wd)."""
    return "data seeds" if df.data_seed.nunique() >= MIN_DATA_SEEDS else "cells"


def _over_units(d: pd.Series) -> tuple[float, float, float, int]:
    """Mean and t interval of paired per-point differences (indexed by POINT), over the data seeds when there are
    MIN_DATA_SEEDS of them, else over the lr x wd cells."""
    d = d.dropna()
    if d.empty:
        return math.nan, math.nan, math.nan, 0
    seeds = d.index.get_level_values("data_seed").nunique() >= MIN_DATA_SEEDS
    return t_interval(d.groupby(level=["data_seed"] if seeds else ["lr", "wd"]).mean().to_numpy())


def load_runs(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path)


def _truthy(s: pd.Series) -> pd.Series:
    return s.astype(str).str.lower().isin(["true", "1"])


def with_outcomes(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["unstable"] = _truthy(df["unstable"])
    df["ratio"] = df.acc_unbiased / df.bayes_unbiased
    for t in THRESHOLDS:
        df[f"success_{t:.2f}"] = (df.ratio >= t) & ~df.unstable
    return df


def learning_rates(df: pd.DataFrame) -> tuple[list[float], list[float]]:
    """(learning rates where some kind succeeds in >= 50% of its runs at 0.9 x Bayes, the others)."""
    main = df[df.biased_fraction == 0.5]
    best = main.groupby(["lr", "attention"])["success_0.90"].mean().groupby("lr").max()
    return sorted(best[best >= 0.5].index), sorted(best[best < 0.5].index)


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float, int]:
    from scipy import stats
    v = np.asarray(values, float)
    k = v.size
    mean = float(v.mean())
    if k < 2:
        return mean, math.nan, math.nan, k
    half = float(stats.t.ppf(0.5 + level / 2, k - 1) * v.std(ddof=1) / math.sqrt(k))
    return mean, mean - half, mean + half, k


def kind_difference(df: pd.DataFrame, a: str, b: str, column: str) -> tuple[float, float, float, int]:
    """Mean of ``column`` for kind a minus kind b, paired per grid point; t interval over the data seeds or cells
    (``_over_units``)."""
    return _over_units(_paired_cells(df, a, column, 0.5) - _paired_cells(df, b, column, 0.5))


def shortcut_harm(df: pd.DataFrame, kind: str) -> tuple[float, float, float, int]:
    """Unbiased accuracy trained without the shortcut minus with it (pp), paired per grid point, t over the data
    seeds or cells."""
    return _over_units(100 * (_paired_cells(df, kind, "acc_unbiased", 0.0) - _paired_cells(df, kind, "acc_unbiased", 0.5)))


def _paired_cells(df: pd.DataFrame, kind: str, column: str, fraction: float) -> pd.Series:
    k = df[(df.attention == kind) & (df.biased_fraction == fraction)]
    return k.set_index(POINT)[column].astype(float)


def shortcut_effect(df: pd.DataFrame, a: str, b: str, column: str = "acc_conflict"
                    ) -> dict[str, tuple[float, float, float, int]]:
    """Kind a minus kind b in ``column``, trained with the shortcut (fraction 0.5), trained without it (fraction 0:
    the "can it learn the cue" control) and their difference-in-differences, (a - b at 0.5) - (a - b at 0): the
    part of the gap the shortcut makes. Each paired per grid point, t over the data seeds or cells."""
    d_with = _paired_cells(df, a, column, 0.5) - _paired_cells(df, b, column, 0.5)
    d_without = _paired_cells(df, a, column, 0.0) - _paired_cells(df, b, column, 0.0)
    return {name: _over_units(d) for name, d in (("with", d_with), ("without", d_without),
                                                  ("did", d_with - d_without))}


def _unit_sentence(df: pd.DataFrame, cells: str) -> str:
    """How the intervals of these runs were made, as a sentence (``cells``: which lr x wd cells enter)."""
    k = df.data_seed.nunique()
    if k >= MIN_DATA_SEEDS:
        return (f"averaged per data seed over {cells} and the init seeds, 95% Student t interval over the {k} data "
                "seeds (the unit that was sampled).")
    return (f"averaged per lr x wd cell, 95% Student t interval over {cells} (the cells are the units; only {k} data "
            "seed(s) were drawn, so variation between data realizations is not resampled).")


def _ci(m: float, lo: float, hi: float, scale: float = 100.0) -> str:
    return f"{scale * m:+.1f} ({scale * lo:+.1f} to {scale * hi:+.1f})"


def control_section(df: pd.DataFrame, kinds: list[str]) -> list[str]:
    """The fraction-0 control beside fraction 0.5 per kind, and the shortcut's own effect between kinds."""
    lines = ["## Can each kind learn the cue? (fraction-0 control)", "",
             "Trained without the shortcut (biased fraction 0), a kind that cannot reach the Bayes ceiling cannot "
             "learn the real cue at all; what it loses with the shortcut (0.5) is then not the shortcut's doing. "
             "Medians (interquartile range) over every run of the grid.", "",
             "| attention | acc / Bayes, fraction 0 | acc / Bayes, fraction 0.5 | conflict-set acc, fraction 0 | "
             "conflict-set acc, fraction 0.5 |", "|---|---|---|---|---|"]
    for k in kinds:
        g0, g5 = df[(df.attention == k) & (df.biased_fraction == 0.0)], df[(df.attention == k) & (df.biased_fraction == 0.5)]
        if g0.empty:
            continue
        lines.append(f"| {k} | {_q(g0.ratio)} | {_q(g5.ratio)} | {_q(g0.acc_conflict)} | {_q(g5.acc_conflict)} |")
    lines += ["", "Conflict-set accuracy between kinds, in pp: the gap trained with the shortcut, the gap trained "
              "without it, and their difference-in-differences (the part of the gap the shortcut makes). Paired "
              f"per grid point, {_unit_sentence(df, 'every cell of the grid')}", "",
              f"| comparison | gap at fraction 0.5 | gap at fraction 0 (control) | shortcut effect (DiD) | {unit_of(df)} |",
              "|---|---|---|---|---|"]
    for a, b in COMPARISONS:
        if a not in kinds or b not in kinds:
            continue
        e = shortcut_effect(df, a, b)
        lines.append(f"| {a} - {b} | {_ci(*e['with'][:3])} | {_ci(*e['without'][:3])} | {_ci(*e['did'][:3])} | "
                     f"{e['did'][3]} |")
    return lines + [""]


# the paper's toy claims as (kinds a - b, the direction it reports, its words); the numbers from its summary
CLAIMS = (("quest", "standard", +1, "QUEST above standard (58% vs 25% success)"),
          ("qnorm", "standard", +1, "QNorm above standard (49% vs 25%)"),
          ("quest", "qnorm", +1, "QUEST above QNorm (58% vs 49%)"),
          ("qknorm_hs", "standard", -1, "QKNorm fails (~0%; here QKNorm-HS, below standard)"))


def _claim_verdict(lo: float, hi: float, direction: int) -> str:
    if not (lo > 0 or hi < 0):
        return "inconclusive (interval includes 0)"
    return "reproduced" if (lo > 0) == (direction > 0) else "reversed"


def key_norm_growth(df: pd.DataFrame, kind: str) -> tuple[float, float, float, int]:
    """How much the shortcut grows a kind's biased-answer keys: the ratio of biased to unbiased answer key norm
    trained with the shortcut (fraction 0.5) minus trained without it (0), paired per grid point, t over the data
    seeds or cells."""
    if "key_norm_biased" not in df:
        return math.nan, math.nan, math.nan, 0
    ratio = df.assign(kr=df.key_norm_biased / df.key_norm_unbiased)
    return _over_units(_paired_cells(ratio, kind, "kr", 0.5) - _paired_cells(ratio, kind, "kr", 0.0))


def claims_section(df: pd.DataFrame, learning: pd.DataFrame, kinds: list[str]) -> list[str]:
    """Each of the paper's toy claims against this grid: reproduced (the interval excludes 0 in the paper's
    direction), reversed (it excludes 0 the other way) or inconclusive."""
    unit = unit_of(df)
    lines = ["## The paper's claims, here", "",
             "Measured on conflict-set accuracy (the shortcut points at a wrong token; threshold-free) at the "
             "learning rates where some kind learns, with the kinds' success at 0.9 x Bayes beside it; 95% t "
             f"interval over the {unit}. Reproduced: the interval excludes 0 in the paper's direction. The "
             "shortcut's part is the difference-in-differences against the fraction-0 control: the part of the gap "
             "that is resisting the shortcut rather than learning the cue better.", "",
             "| the paper says | measured here (pp) | of which the shortcut's part (pp) | success at 0.9 x Bayes | "
             "verdict |", "|---|---|---|---|---|"]
    for a, b, direction, words in CLAIMS:
        if a not in kinds or b not in kinds:
            continue
        m, lo, hi, n = kind_difference(learning, a, b, "acc_conflict")
        main = learning[learning.biased_fraction == 0.5]
        rates = " vs ".join(f"{k} {100 * main[main.attention == k]['success_0.90'].mean():.0f}%" for k in (a, b))
        did = shortcut_effect(learning, a, b)["did"]
        lines.append(f"| {words} | {a} - {b}: {_ci(m, lo, hi)}, {n} {unit} | {_ci(*did[:3])} | {rates} | "
                     f"{_claim_verdict(lo, hi, direction)} |")
    if "standard" in kinds:
        m, lo, hi, n = key_norm_growth(df, "standard")
        measured = ("not recorded by these runs" if n == 0 else
                    f"biased / unbiased answer key norm, fraction 0.5 minus 0: {m:+.2f} ({lo:+.2f} to {hi:+.2f}), "
                    f"{n} {unit}")
        verdict = "not measured" if n == 0 else _claim_verdict(lo, hi, +1)
        lines.append(f"| standard attention grows the keys of the biased answers | {measured} | - | - | {verdict} |")
    return lines + [""]


def key_norm_section(df: pd.DataFrame, kinds: list[str]) -> list[str]:
    """The paper's mechanism: how large the answer tokens' raw keys grow, biased against unbiased answers, per
    kind and biased fraction (runs that recorded it)."""
    if "key_norm_biased" not in df or df.key_norm_biased.isna().all():
        return []
    kn = df.dropna(subset=["key_norm_biased", "key_norm_unbiased"])
    lines = ["## Key norms of the answer tokens", "",
             "Mean norm of the answer token's key before any normalization, on held-out biased answers (drawn from "
             "the shortcut) and unbiased ones, at the end of training; the ratio biased / unbiased per run. The "
             "paper's mechanism is standard attention growing the biased answers' keys; a normalized-key kind's "
             "logits do not see these norms. Medians (interquartile range) over "
             f"{len(kn)} of {len(df)} runs (those that recorded it).", "",
             "| attention | biased answers, fraction 0.5 | unbiased answers, fraction 0.5 | biased / unbiased, "
             "fraction 0.5 | biased / unbiased, fraction 0 |", "|---|---|---|---|---|"]
    for k in kinds:
        g5, g0 = kn[(kn.attention == k) & (kn.biased_fraction == 0.5)], kn[(kn.attention == k) & (kn.biased_fraction == 0.0)]
        if g5.empty or g0.empty:
            continue
        lines.append(f"| {k} | {_q(g5.key_norm_biased)} | {_q(g5.key_norm_unbiased)} | "
                     f"{_q(g5.key_norm_biased / g5.key_norm_unbiased)} | {_q(g0.key_norm_biased / g0.key_norm_unbiased)} |")
    return lines + [""]


def success_curves(df: pd.DataFrame, path: Path) -> None:
    """Per learning rate and kind: success rate at 0.9 x Bayes and median conflict-set accuracy (fraction 0.5),
    and success without the shortcut (fraction 0, dashed), as a png."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = with_outcomes(df)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, kind in enumerate(dict.fromkeys(df.attention)):
        k = df[df.attention == kind]
        for fraction, style in ((0.5, "-"), (0.0, "--")):
            g = k[k.biased_fraction == fraction].groupby("lr")
            if not len(g):
                continue
            axes[0].plot(g["success_0.90"].mean().index, 100 * g["success_0.90"].mean(), style, marker="o", ms=3,
                         color=colors[i % len(colors)], label=kind if fraction == 0.5 else None)
            axes[1].plot(g.acc_conflict.median().index, g.acc_conflict.median(), style, marker="o", ms=3,
                         color=colors[i % len(colors)])
    lrs = sorted(df.lr.unique())
    for ax, title in zip(axes, ("success at 0.9 x Bayes (%)", "median conflict-set accuracy")):
        ax.set_xscale("log")
        ax.set_xticks(lrs, [f"{x:g}" for x in lrs], fontsize=7)
        ax.minorticks_off()
        ax.set_xlabel("learning rate")
        ax.set_title(title + "; dashed: no shortcut", fontsize=9)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _q(s: pd.Series) -> str:
    q1, med, q3 = np.percentile(s, [25, 50, 75])
    return f"{med:.3f} ({q1:.3f}-{q3:.3f})"


def markdown(df: pd.DataFrame, preset: str, image_prefix: str = "") -> str:
    df = with_outcomes(df)
    learn, dead = learning_rates(df)
    none_learn = not learn
    if none_learn:  # no kind succeeds in half its runs at any learning rate: every learning rate is read
        learn, dead = sorted(df.lr.unique()), []
    kinds = list(dict.fromkeys(df.attention))
    main = df[df.biased_fraction == 0.5]
    ml = main[main.lr.isin(learn)]
    n_cells = ml.groupby(["lr", "wd"]).ngroups
    design, model = design_of(preset)
    lines = [f"# QUEST toy example, {design} ({preset} grid: {len(df)} runs)", "",
             f"{model[0].upper()}{model[1:]}. Runner: `questbench/toy/mean_design.py`; statistics: "
             "`questbench/toy/stats.py`. Grid: learning rates " + ", ".join(f"{x:g}" for x in sorted(df.lr.unique()))
             + "; weight decays " + ", ".join(f"{x:g}" for x in sorted(df.wd.unique())) + f"; "
             f"{df.init_seed.nunique()} init seeds x {df.data_seed.nunique()} data seeds; biased fraction 0.5 "
             f"(and 0 for the shortcut harm). Bayes ceiling of unbiased accuracy (the answer's class with the largest "
             f"posterior) on the evaluation samples: mean "
             f"{main.bayes_unbiased.mean():.3f}.", "",
             ("No learning rate where some kind succeeds in >= 50% of its runs at 0.9 x Bayes: the tables below "
              "read every learning rate." if none_learn else
              f"Learning rates where some kind still learns (success >= 50% at 0.9 x Bayes): "
              f"{', '.join(f'{x:g}' for x in learn)}. "
              + (f"At {', '.join(f'{x:g}' for x in dead)} every kind fails; the tables below use the learning rates "
                 "where some kind learns unless they say otherwise." if dead else "That is every learning rate of "
                 "the grid.")),
             ""] + claims_section(df, df[df.lr.isin(learn)], kinds) + [
             "## Threshold-free (primary)", "",
             "Median (interquartile range) over the runs at "
             + ("every learning rate." if none_learn else "the learning rates where some kind learns."), "",
             "| attention | runs | unbiased acc / Bayes | conflict-set acc | success at 0.85 / 0.90 / 0.95 x Bayes "
             "| reported (paper) |", "|---|---|---|---|---|---|"]
    for k in kinds:
        g = ml[ml.attention == k]
        rates = " / ".join(f"{100 * g[f'success_{t:.2f}'].mean():.0f}%" for t in THRESHOLDS)
        lines.append(f"| {k} | {len(g)} | {_q(g.ratio)} | {_q(g.acc_conflict)} | {rates} | {PAPER_RATES.get(k, '-')} |")
    lines += ["", "All learning rates (as the paper's grid counts them): success at 0.9 x Bayes " + ", ".join(
        f"{k} {100 * main[main.attention == k]['success_0.90'].mean():.0f}%" for k in kinds) + ".", "",
              "## Differences between kinds", "",
              "Paired per grid point, " + _unit_sentence(
                  df, f"the {n_cells} cells" + ("" if none_learn else " where some kind learns"))
              + " 'tie' when the interval includes zero.", "",
              "| comparison | unbiased acc / Bayes (x100) | conflict-set acc (pp) | success at 0.9 x Bayes (pp) | "
              f"conflict-set acc (pp), all {main.groupby(['lr', 'wd']).ngroups} cells |",
              "|---|---|---|---|---|"]
    verdicts = {}
    for a, b in COMPARISONS:
        if a not in kinds or b not in kinds:
            continue
        cells = []
        for col in ("ratio", "acc_conflict", "success_0.90"):
            m, lo, hi, n = kind_difference(ml, a, b, col)
            verdict = "tie" if not (lo > 0 or hi < 0) else (f"{a} higher" if lo > 0 else f"{b} higher")
            verdicts[(a, b, col)] = verdict
            cells.append(f"{100 * m:+.1f} ({100 * lo:+.1f} to {100 * hi:+.1f}): {verdict}")
        m, lo, hi, n = kind_difference(main, a, b, "acc_conflict")
        cells.append(f"{100 * m:+.1f} ({100 * lo:+.1f} to {100 * hi:+.1f}): "
                     + ("tie" if not (lo > 0 or hi < 0) else (f"{a} higher" if lo > 0 else f"{b} higher")))
        lines.append(f"| {a} - {b} | " + " | ".join(cells) + " |")
    order = [(a, b) for a, b in (("qnorm", "standard"), ("quest", "qnorm")) if (a, b, "success_0.90") in verdicts]
    if len(order) == 2:
        held = [verdicts[(a, b, "success_0.90")] == f"{a} higher" for a, b in order]
        lines += ["", "The paper's order standard < QNorm < QUEST (success at 0.9 x Bayes): "
                  + ("established here (both steps exclude zero)." if all(held) else
                     "not established here: " + "; ".join(
                         f"{a} vs {b} is a {'difference' if h else 'tie'}" for (a, b), h in zip(order, held)) + ".")]
    per_lr = main.groupby(["attention", "lr"]).acc_conflict.median().unstack()
    lrs = list(per_lr.columns)
    lines += ["", "## Conflict-set accuracy per learning rate", "",
              "Median over every run at each learning rate (every weight decay and seed; no threshold), so each "
              "kind's range is visible beyond the learning rates where some kind learns.", "",
              "| attention | " + " | ".join(f"lr {x:g}" for x in lrs) + " |", "|---" * (len(lrs) + 1) + "|"]
    lines += [f"| {k} | " + " | ".join(f"{per_lr.loc[k, x]:.3f}" for x in lrs) + " |" for k in kinds]
    lines += ["", "## Shortcut harm and instability", "",
              "Shortcut harm: unbiased accuracy trained without the shortcut (fraction 0) minus with it (0.5), "
              f"paired per grid point, t interval over the {unit_of(df)} (lr x wd cells where some kind learns). Instability "
              "(non-finite loss, max |logit| > 1000, entropy < 0.1 nats, or a loss spike), both fractions.", "",
              f"| attention | shortcut harm (pp, 95% CI, {unit_of(df)}) | unstable, lr where some kind learns | "
              "unstable, other lr |", "|---|---|---|---|"]
    for k in kinds:
        m, lo, hi, n = shortcut_harm(df[df.lr.isin(learn)], k)
        kd = df[df.attention == k]
        un_l = kd[kd.lr.isin(learn)].unstable.mean()
        un_d = kd[kd.lr.isin(dead)].unstable.mean() if dead else math.nan
        lines.append(f"| {k} | {m:+.2f} ({lo:+.2f} to {hi:+.2f}, {n}) | {100 * un_l:.0f}% | "
                     + (f"{100 * un_d:.0f}%" if dead else "-") + " |")
    lines += [""] + control_section(df, kinds) + key_norm_section(df, kinds)
    lines += [f"![success and conflict-set accuracy per learning rate]({image_prefix}success_curves.png)", "",
              f"![success per learning rate and weight decay]({image_prefix}success_heatmap.png)", "",
              f"![max attention logit, entropy and key norm during training]({image_prefix}training_traces.png)", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys
    src, preset = Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "full"
    prefix = sys.argv[3] if len(sys.argv) > 3 else ""
    sys.stdout.write(markdown(load_runs(src), preset, prefix))
