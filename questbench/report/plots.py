"""Plots written beside a markdown leaderboard: accuracy vs severity per corruption family, robust accuracy
vs eps per attack sweep, attention entropy and key norm per layer."""
from __future__ import annotations

from pathlib import Path

from .tables import Tables


def write_plots(t: Tables, md_path: Path, diagnostics=None) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    md_path = Path(md_path)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    stem = md_path.stem
    if not t.severity.empty:
        fam = t.severity.groupby(["model", "group", "severity"]).accuracy.mean().reset_index()
        groups = sorted(fam.group.unique())
        fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups), 3), sharey=True, squeeze=False)
        for ax, g in zip(axes[0], groups):
            for model, d in fam[fam.group == g].groupby("model"):
                ax.plot(d.severity, d.accuracy, marker="o", label=model)
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
            for model, d in d_sw.sort_values("eps").groupby("model"):
                ax.plot(d.eps if patch else d.eps * 255, d.robust, marker="o", label=model,
                        linestyle="-" if len(d) > 1 else "none")
            ns = sorted(set(int(x) for x in d_sw.n))
            ax.set_title(f"{sw} (n={'/'.join(map(str, ns))})", fontsize=8)
            ax.set_xlabel("patches" if patch else "eps (x 1/255)")
        written.append(_finish(fig, axes, "robust accuracy (%)", md_path.with_name(f"{stem}_attacks.png"),
                               "robust accuracy vs attack budget"))
    if diagnostics is not None and not diagnostics.empty:
        d = diagnostics.assign(depth=diagnostics.groupby("model").cumcount() + 1)
        fig, axes = plt.subplots(1, 2, figsize=(7.2, 3), squeeze=False)
        for model, g in d.groupby("model"):
            axes[0][0].plot(g.depth, g.entropy / g.max_entropy, marker="o", label=model)
            axes[0][1].plot(g.depth, g.k_norm_mean, marker="o", label=model)
        axes[0][0].set_title("attention entropy / log N", fontsize=8)
        axes[0][1].set_title("mean key norm (before normalization)", fontsize=8)
        for ax in axes[0]:
            ax.set_xlabel("layer")
            ax.set_xticks(sorted(d.depth.unique()))
        written.append(_finish(fig, axes, "", md_path.with_name(f"{stem}_attention.png"),
                               "attention entropy and key norm per layer (clean inputs)"))
    return written


def _finish(fig, axes, ylabel: str, path: Path, title: str) -> tuple[str, str]:
    import matplotlib.pyplot as plt

    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return title, path.name
