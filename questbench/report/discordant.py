"""Where two models differ: per standard/other pair and per single setting (clean, each corruption at each
severity, each attack at each eps), the discordant samples - right for one model, wrong for the other - the
samples a paired test counts. From the per-sample records only (no torch)."""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from ..store.results import Results
from .compare import settings_of


@dataclass
class Sample:
    sample_id: str
    label: int
    pred_baseline: int
    pred_model: int


@dataclass
class Cell:
    """One setting of one pair: the discordant samples, the first ``cap`` of each side kept (by sample id)."""

    evaluation: str
    setting: str
    model_right: list[Sample] = field(default_factory=list)
    baseline_right: list[Sample] = field(default_factory=list)
    n_model_right: int = 0
    n_baseline_right: int = 0
    n_shared: int = 0
    # what reproduces the image the models saw: ("corruption", name, severity), else ("clean",) with the setting
    # named (an adversarial image depends on its batch and is not stored)
    view: tuple = ("clean",)


def pairs_of(pairs: pd.DataFrame) -> list[tuple[str, str]]:
    """(model, its standard baseline) for every pair the paired tables compare (``pairs``: ``Tables.pairs``)."""
    if pairs.empty:
        return []
    return sorted({(m, b) for m, b in zip(pairs.model, pairs.baseline)})


def discordant_cells(results: Results, model: str, baseline: str, cap: int = 6) -> list[Cell]:
    """Every single setting both models ran, in the paired table's reading order."""
    s = results.samples
    s = s[s.model.isin([model, baseline])]
    cells = []
    for evaluation, setting, g, aggregate in settings_of(s):
        if aggregate:
            continue
        a = g[g.model == baseline].drop_duplicates("sample_id").set_index("sample_id")
        b = g[g.model == model].drop_duplicates("sample_id").set_index("sample_id")
        shared = a.index.intersection(b.index).sort_values()
        if not len(shared):
            continue
        a, b = a.loc[shared], b.loc[shared]
        ok_a, ok_b = a.correct.astype(bool), b.correct.astype(bool)
        view = ("clean",)
        if evaluation == "corruption" and pd.notna(g.corruption.iloc[0]):
            view = ("corruption", str(g.corruption.iloc[0]), int(g.severity.iloc[0]))
        cell = Cell(evaluation, setting, n_shared=len(shared), view=view)
        for side, mask in (("model_right", ok_b & ~ok_a), ("baseline_right", ok_a & ~ok_b)):
            ids = list(shared[mask.to_numpy()])
            setattr(cell, f"n_{side}", len(ids))
            setattr(cell, side, [Sample(sid, int(a.label[sid]), int(a.pred[sid]), int(b.pred[sid]))
                                 for sid in ids[:cap]])
        cells.append(cell)
    return cells
