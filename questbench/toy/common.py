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
    """How often the token with the most energy in the signal dimensions is the answer *position*. Not the Bayes
    ceiling of the task (the target is the answer's class, which other tokens can share): ``bayes_class_accuracy``
    is. ``x`` is (samples, tokens, key_dim), ``pos`` the answer positions."""
    energy = (x[..., :signal_dims] ** 2).sum(-1)
    return float((energy.argmax(1) == pos).sum()) / len(pos)


def bayes_class_posterior(x: Any, c: Any, signal_dims: int, signal_var: float, values: int) -> np.ndarray:
    """P(answer class = v | tokens) for unbiased samples, (samples, values).

    The answer sits at a uniformly random position; its key part is N(0, Sigma) with variance ``signal_var`` in
    the first ``signal_dims`` dimensions and 1 elsewhere, every other token's N(0, I). So P(position j | x) is
    proportional to the likelihood ratio N(x_j; 0, Sigma) / N(x_j; 0, I) = const * exp((1 - 1/signal_var) / 2 *
    E_j), E_j the token's energy in the signal dimensions, and a class's posterior is the sum over the tokens
    that carry it."""
    x = np.asarray(x, dtype=np.float64)
    c = np.asarray(c)
    energy = (x[..., :signal_dims] ** 2).sum(-1)
    logw = 0.5 * (1.0 - 1.0 / signal_var) * energy
    w = np.exp(logw - logw.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    post = np.zeros((x.shape[0], values))
    np.add.at(post, (np.arange(x.shape[0])[:, None], c), w)
    return post


def bayes_class_accuracy(x: Any, c: Any, pos: Any, signal_dims: int, signal_var: float, values: int) -> float:
    """Accuracy of the Bayes rule on these samples: the class with the largest posterior (``bayes_class_posterior``)
    against the answer's class. The ceiling of any model's unbiased accuracy, on average."""
    c, pos = np.asarray(c), np.asarray(pos)
    post = bayes_class_posterior(x, c, signal_dims, signal_var, values)
    return float((post.argmax(1) == c[np.arange(len(pos)), pos]).mean())


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
