"""Plots written beside a markdown leaderboard: accuracy vs severity per corruption family, robust accuracy
vs eps per attack sweep, attention entropy and key norm per layer."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from .tables import Tables


KIND_COLOURS = {"standard": "#444444", "quest": "#d62728", "qnorm": "#1f77b4", "qknorm_hs": "#2ca02c",
                "qknorm_ds": "#9467bd"}


def _attention_of(t: Tables, diagnostics=None) -> dict[str, str]:
    kinds: dict[str, str] = {}
    for df in (t.clean, t.corruptions, t.attacks, diagnostics):
        if df is not None and not df.empty and "attention" in df:
            kinds.update(dict(zip(df.model, df.attention)))
    return kinds


def _lines(ax, data, x: str, y: str, kinds: dict[str, str], xscale: float = 1.0, **kw) -> None:
    """One colour per attention kind. A kind with one model: its line, labelled by the model. A kind with
    several (seeds): thin lines per model and a bold line for their mean, labelled by the kind and its count, so
    QUEST vs standard reads off the plot whatever the number of seeds."""
    by_kind: dict[str, list] = {}
    for model, d in data.groupby("model"):
        by_kind.setdefault(kinds.get(model, model), []).append((model, d.sort_values(x)))
    for kind, items in sorted(by_kind.items()):
        colour = KIND_COLOURS.get(kind)
        if len(items) == 1:
            model, d = items[0]
            ax.plot(d[x] * xscale, d[y], marker="o", color=colour, label=model, **kw)
            continue
        for _, d in items:
            ax.plot(d[x] * xscale, d[y], color=colour, alpha=0.3, lw=0.8, **kw)
        mean = pd.concat([d for _, d in items]).groupby(x)[y].mean()
        ax.plot(mean.index * xscale, mean.to_numpy(), marker="o", color=colour, lw=2.2,
                label=f"{kind} (mean of {len(items)})", **kw)


def write_plots(t: Tables, md_path: Path, diagnostics=None) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = _attention_of(t, diagnostics)
    written = []
    md_path = Path(md_path)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    stem = md_path.stem
    forest = _write_forest(t, md_path.with_name(f"{stem}_contrasts.png"), plt)
    if forest is not None:
        written.append(forest)
    if not t.severity.empty:
        fam = t.severity.groupby(["model", "group", "severity"]).accuracy.mean().reset_index()
        groups = sorted(fam.group.unique())
        fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups), 3), sharey=True, squeeze=False)
        for ax, g in zip(axes[0], groups):
            _lines(ax, fam[fam.group == g], "severity", "accuracy", kinds)
            ax.set_title(g)
            ax.set_xlabel("severity")
            ax.set_xticks([1, 2, 3, 4, 5])
        written.append(_finish(fig, axes, "accuracy (%)", md_path.with_name(f"{stem}_corruptions.png"),
                               "accuracy vs severity per corruption family"))
    # one panel per sweep, lines only between points of the same n (the worst case mixes subsets: left out)
    att = t.attacks[t.attacks.attack != "worst-case"] if not t.attacks.empty else t.attacks
    if not att.empty:
        sweeps = list(dict.fromkeys(att.sort_values(["attack", "norm"]).sweep))
        fig, axes = plt.subplots(1, len(sweeps), figsize=(3.6 * len(sweeps), 3), sharey=True, squeeze=False)
        for ax, sw in zip(axes[0], sweeps):
            d_sw = att[att.sweep == sw]
            patch = (d_sw.attack == "patch").all()  # the budget is a patch count, not an eps
            _lines(ax, d_sw, "eps", "robust", kinds, xscale=1.0 if patch else 255.0,
                   linestyle="-" if d_sw.eps.nunique() > 1 else "none")
            ns = sorted(set(int(x) for x in d_sw.n))
            ax.set_title(f"{sw} (n={'/'.join(map(str, ns))})", fontsize=8)
            ax.set_xlabel("patches" if patch else "eps (x 1/255)")
        written.append(_finish(fig, axes, "robust accuracy (%)", md_path.with_name(f"{stem}_attacks.png"),
                               "robust accuracy vs attack budget"))
    if diagnostics is not None and not diagnostics.empty:
        d = diagnostics.assign(depth=diagnostics.groupby("model").cumcount() + 1)
        fig, axes = plt.subplots(1, 2, figsize=(7.2, 3), squeeze=False)
        d = d.assign(ratio=d.entropy / d.max_entropy)
        _lines(axes[0][0], d, "depth", "ratio", kinds)
        _lines(axes[0][1], d, "depth", "k_norm_mean", kinds)
        axes[0][0].set_title("attention entropy / log N", fontsize=8)
        axes[0][1].set_title("mean key norm (before normalization)", fontsize=8)
        for ax in axes[0]:
            ax.set_xlabel("layer")
            ax.set_xticks(sorted(d.depth.unique()))
        written.append(_finish(fig, axes, "", md_path.with_name(f"{stem}_attention.png"),
                               "attention entropy and key norm per layer (clean inputs)"))
    deltas = _write_deltas(t, kinds, md_path.with_name(f"{stem}_deltas.png"), plt)
    if deltas is not None:
        written.append(deltas)
    return written


FOREST_TITLE = "contrasts across seeds: mean and 95% interval over trained pairs"


def forest_rows(t: Tables) -> pd.DataFrame:
    """What the forest plot shows: the study's verdict rows when it declares endpoints, else every contrast (each
    kind against standard, kind against kind, factorial) at clean and at the aggregate rows."""
    from .compare import AGGREGATE, RELATIVE
    if not t.study.empty:
        return t.study.assign(label=t.study.contrast + "  |  " + t.study.endpoint)
    rows = [t.seeds.assign(contrast=t.seeds.attention + " - standard")] if not t.seeds.empty else []
    rows += [t.contrasts] if not t.contrasts.empty else []
    if not rows:
        return pd.DataFrame()
    df = pd.concat(rows, ignore_index=True)
    df = df[df.setting.isin(["clean", AGGREGATE, RELATIVE])]
    return df.assign(label=df.contrast + "  |  " + df.evaluation + " " + df.setting)


def _write_forest(t: Tables, path: Path, plt) -> Optional[tuple[str, str]]:
    rows = forest_rows(t)
    if rows.empty:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.22 * len(rows)))
    y = np.arange(len(rows))[::-1]
    ax.errorbar(rows.delta_pp, y, xerr=[rows.delta_pp - rows.ci_low, rows.ci_high - rows.delta_pp], fmt="o",
                color="#1f77b4", ms=4, capsize=2, lw=1)
    if t.margin_pp and not t.study.empty:
        ax.axvspan(-t.margin_pp, t.margin_pp, color="#2ca02c", alpha=0.12, label=f"+-{t.margin_pp:g} pp margin")
        ax.legend(fontsize=7, loc="lower right")
    ax.axvline(0, color="#888", lw=0.8)
    ax.set_yticks(y)
    ax.set_yticklabels(rows.label, fontsize=7)
    ax.set_xlabel("delta (pp): first kind minus second")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return FOREST_TITLE, path.name


def _delta_panels(t: Tables) -> list[tuple[str, list[str]]]:
    """(evaluation, its settings in reading order) of the paired table, aggregates first in one summary panel."""
    from .compare import AGGREGATE, RELATIVE
    p = t.pairs
    single = {e: [s for s in dict.fromkeys(p[p.evaluation == e].setting) if s not in (AGGREGATE, RELATIVE)]
              for e in dict.fromkeys(p.evaluation)}
    summary = [(e, s) for e, s in dict.fromkeys(zip(p.evaluation, p.setting))
               if s in (AGGREGATE, RELATIVE) or len(single[e]) == 1]  # clean, the aggregates, one-setting evaluations
    panels = [("clean, each evaluation over all its settings, and one-setting evaluations",
               [f"{e}|{s}" for e, s in summary])]
    panels += [(e, [f"{e}|{s}" for s in settings]) for e, settings in single.items() if len(settings) > 1]
    return panels


def _write_deltas(t: Tables, kinds: dict[str, str], path: Path, plt) -> Optional[tuple[str, str]]:
    """Model minus its standard pair per setting, with the paired table's 95% interval; a kind with several
    pairs: each pair's point thin, and its across-seed mean and t interval bold where the across-seed table has
    the setting (it has the aggregates, not each of the 75 corruption settings)."""
    if t.pairs.empty:
        return None
    p = t.pairs.assign(key=t.pairs.evaluation + "|" + t.pairs.setting)
    seeds = t.seeds.assign(key=t.seeds.evaluation + "|" + t.seeds.setting) if not t.seeds.empty else t.seeds
    panels = _delta_panels(t)
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.5 * len(panels)), squeeze=False)
    for ax, (title, keys) in zip(axes[:, 0], panels):
        pos = {k: i for i, k in enumerate(keys)}
        rows = p[p.key.isin(pos)]
        models = sorted(rows.model.unique())
        by_kind: dict[str, list[str]] = {}
        for m in models:
            by_kind.setdefault(kinds.get(m, m), []).append(m)
        offsets = {kind: (j - (len(by_kind) - 1) / 2) * 0.18 for j, kind in enumerate(sorted(by_kind))}
        for kind, members in sorted(by_kind.items()):
            colour = KIND_COLOURS.get(kind)
            s_rows = seeds[(seeds.attention == kind) & seeds.key.isin(pos)] if not seeds.empty else seeds
            several = len(members) > 1
            for i, m in enumerate(members):
                d = rows[rows.model == m]
                x = d.key.map(pos).to_numpy() + offsets[kind]
                if several:  # a legend entry per pair would bury the panel (30 of them in the study's page)
                    label = (f"{kind} minus standard, each of {len(members)} pairs (no across-seed row)"
                             if i == 0 and s_rows.empty else None)
                    ax.plot(x, d.delta_pp, "o", color=colour, alpha=0.3, ms=3, label=label)
                else:
                    ax.errorbar(x, d.delta_pp, yerr=[d.delta_pp - d.ci_low, d.ci_high - d.delta_pp], fmt="o",
                                color=colour, ms=4, capsize=2, lw=1, label=f"{m} minus {d.baseline.iloc[0]}")
            if several and not s_rows.empty:
                x = s_rows.key.map(pos).to_numpy() + offsets[kind]
                ax.errorbar(x, s_rows.delta_pp, yerr=[s_rows.delta_pp - s_rows.ci_low, s_rows.ci_high - s_rows.delta_pp],
                            fmt="s", color=colour, ms=5, capsize=3, lw=2,
                            label=f"{kind} minus standard, mean of {int(s_rows.n_pairs.max())} pairs")
        ax.axhline(0, color="#888", lw=0.8)
        labels = [k.split("|", 1)[1] if title != panels[0][0] else k.replace("|", ": ") for k in keys]
        step = max(1, len(keys) // 15)  # at most ~15 tick labels (75 corruption settings: one per corruption)
        ax.set_xticks(range(0, len(keys), step))
        ax.set_xticklabels([labels[i] for i in range(0, len(keys), step)], fontsize=7, rotation=20, ha="right")
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("delta (pp)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return "model minus its standard pair per setting, with the paired table's 95% interval", path.name


def _save(fig, path: Path) -> None:
    """Rendered in memory, then written in one rename: a link planted at ``path`` is replaced, not followed."""
    import io

    from .._io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, dpi=110, format="png")
    atomic_write_bytes(Path(path), buf.getvalue())


def _finish(fig, axes, ylabel: str, path: Path, title: str) -> tuple[str, str]:
    import matplotlib.pyplot as plt

    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return title, path.name
