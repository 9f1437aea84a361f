"""What the toy's two designs share: the paper's reported rates, the Bayes-optimal robust rule, the tidy csv
writer and the success heatmap. No torch at import (the statistics read the paper rates without it); the Bayes
rule takes torch tensors or numpy arrays alike."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

# success rates the paper reports for its toy (from a secondary summary; its sizes, grid and criterion differ)
PAPER_RATES = {"standard": "25%", "qnorm": "49%", "qknorm_hs": "~0% (QKNorm)", "quest": "58%"}


def signal_energy_accuracy(x: Any, pos: Any, signal_dims: int) -> float:
    """Accuracy of the Bayes-optimal robust rule: the likelihood ratio N(0, Sigma) / N(0, I) grows with the
    energy in the signal dimensions, so the answer is the token with the most energy there. ``x`` is
    (samples, tokens, key_dim), ``pos`` the answer positions."""
    energy = (x[..., :signal_dims] ** 2).sum(-1)
    return float((energy.argmax(1) == pos).sum()) / len(pos)


def tidy_csv(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """Rows of one shape as csv text: floats at 6 significant digits, one header, "\\n" line ends."""
    buf = io.StringIO()
    cols = list(columns or (rows[0].keys() if rows else []))
    if not cols:
        return ""
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for row in rows:
        w.writerow([f"{row[c]:.6g}" if isinstance(row[c], float) else row[c] for c in cols])
    return buf.getvalue()


def success_heatmap(outcomes: Iterable[tuple[str, float, float, bool]], path: Path, title: str) -> None:
    """One panel per attention kind: the success rate in each learning-rate x weight-decay cell, from
    (kind, lr, wd, success) outcomes, written as a png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outcomes = list(outcomes)
    kinds = list(dict.fromkeys(o[0] for o in outcomes))
    lrs, wds = sorted({o[1] for o in outcomes}), sorted({o[2] for o in outcomes})
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.0 * len(kinds), 2.9), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        m = np.array([[np.mean([o[3] for o in outcomes if o[0] == kind and o[1] == lr and o[2] == wd] or [np.nan])
                       for lr in lrs] for wd in wds])
        im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis", origin="lower")
        ax.set_xticks(range(len(lrs)), [f"{v:g}" for v in lrs], rotation=45, fontsize=7)
        ax.set_yticks(range(len(wds)), [f"{v:g}" for v in wds], fontsize=7)
        ax.set_title(kind, fontsize=9)
        ax.set_xlabel("learning rate", fontsize=8)
        for i in range(len(wds)):
            for j in range(len(lrs)):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", color="w", fontsize=7)
    axes[0][0].set_ylabel("weight decay", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="success rate")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
