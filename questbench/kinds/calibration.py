"""Calibration under shift: how well a model's confidence matches its accuracy on clean images, every corruption
setting and every shift test set of the suite (turned on by a ``[calibration]`` table).

Per image: the predicted probability of the predicted class (``confidence``) and of the true class (``p_true``),
its negative log-likelihood (``nll``, nats) and multiclass Brier score (``brier``: the squared distance from the
probability vector to the one-hot label, 0 to 2). Per setting: expected calibration error over equal-mass
confidence bins (15 by default; Nixon et al. 2019, "Measuring Calibration in Deep Learning"), mean NLL and
mean Brier score; between a model and its standard-attention sibling, paired differences with a bootstrap
interval over images (all of an image's corruption settings resampled together). On a shift test set the
probabilities are those of the shift's protocol (logits masked to its classes) and an image is correct as the
protocol counts it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .base import Advance, Job, Kind, Part, Planning, SampleRecord, Work, per_sample, split

if TYPE_CHECKING:  # pandas is imported where the tables are made: the command line starts without it
    import pandas as pd

CLEAN, SHIFT = "clean", "shift/"
N_BOOT = 1000


class CalibrationSpec(BaseModel):
    """The suite's ``[calibration]`` table."""

    model_config = ConfigDict(extra="forbid", strict=True)
    bins: int = Field(15, ge=2, le=1000)  # equal-mass confidence bins of the expected calibration error


class CalibrationRecord(SampleRecord):
    confidence: float
    p_true: float
    nll: float
    brier: float


# --- per image: from the logits -----------------------------------------------------------------------------
def probability_fields(logits, labels) -> list[dict[str, float]]:
    """confidence, p_true, nll and brier of each image of a batch (computed in float64 from the logits)."""
    import torch

    logp = torch.log_softmax(logits.detach().double(), dim=1)
    p = logp.exp()
    lp_true = logp.gather(1, labels.long().view(-1, 1)).squeeze(1)
    p_true = lp_true.exp()
    brier = (p * p).sum(1) - 2 * p_true + 1
    conf = p.max(1).values
    rows = torch.stack([conf, p_true, -lp_true, brier], 1).cpu().tolist()
    return [{"confidence": c, "p_true": t, "nll": n, "brier": b} for c, t, n, b in rows]


def _consistent(r: dict[str, Any]) -> bool:
    """A row's outcome and probabilities agree with each other (the store refuses one that does not)."""
    correct = r["pred"] in r["real_labels"] if "real_labels" in r else r["pred"] == r["label"]
    return (r["correct"] == correct and 0 <= r["p_true"] <= r["confidence"] + 1e-9 <= 1 + 1e-9
            and math.isclose(r["nll"], -math.log(max(r["p_true"], 1e-300)), rel_tol=1e-6, abs_tol=1e-9)
            and -1e-9 <= r["brier"] <= 2 + 1e-9)


# --- per setting: the metrics ----------------------------------------------------------------------------------
def expected_calibration_error(confidence, correct, bins: int = 15) -> np.ndarray:
    """ECE (a fraction) over equal-mass bins along the last axis: images sorted by confidence, cut into ``bins``
    runs of equal count (sizes differ by at most one, larger first, as numpy.array_split cuts), sum over bins of
    |accuracy - mean confidence| weighted by the bin's share. Images of equal confidence are one to the binning,
    so each counts its tie group's mean accuracy (a cut through a tie cannot sort correct images apart from
    wrong ones). Leading axes are independent problems (bootstrap resamples, settings)."""
    conf = np.asarray(confidence, float)
    corr = np.asarray(correct, float)
    n = conf.shape[-1]
    bins = max(1, min(bins, n))
    order = np.argsort(conf, axis=-1, kind="stable")
    conf, corr = np.take_along_axis(conf, order, -1), np.take_along_axis(corr, order, -1)
    corr = _tie_means(conf, corr)
    sizes = n // bins + (np.arange(bins) < n % bins)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    gap = np.add.reduceat(corr - conf, starts, axis=-1)
    return np.abs(gap).sum(-1) / n


def _tie_means(conf: np.ndarray, corr: np.ndarray) -> np.ndarray:
    """``corr`` with each run of equal values of the sorted ``conf`` replaced by its mean (per leading index)."""
    new = np.ones(conf.shape, bool)
    new[..., 1:] = conf[..., 1:] != conf[..., :-1]
    if new.all():
        return corr
    n = conf.shape[-1]
    rows = int(np.prod(conf.shape[:-1], dtype=int))
    gid = (np.cumsum(new, axis=-1) - 1 + (np.arange(rows) * n).reshape(conf.shape[:-1] + (1,))).ravel()
    sums = np.bincount(gid, corr.ravel(), minlength=rows * n)
    counts = np.bincount(gid, minlength=rows * n)
    return (sums / np.maximum(counts, 1))[gid].reshape(conf.shape)


def _metrics(g: pd.DataFrame, bins: int) -> dict[str, float]:
    return {"ece": float(expected_calibration_error(g.confidence, g.correct, bins)), "nll": float(g.nll.mean()),
            "brier": float(g.brier.mean()), "n": len(g)}


def _setting_group(setting: str, corruption) -> str:
    if isinstance(corruption, str):
        return "corruptions"
    return setting.removeprefix(SHIFT) if setting.startswith(SHIFT) else CLEAN


def _cube(rows: pd.DataFrame, ids: list[str], column: str) -> np.ndarray:
    """settings x images array of one column, images in ``ids`` order."""
    table = rows.pivot(index="setting", columns="sample_id", values=column)
    return table[ids].to_numpy(dtype=float)


def _paired(base: pd.DataFrame, other: pd.DataFrame, bins: int, seed: int = 0) -> dict[str, tuple[float, ...]]:
    """other minus base on the images both saw, per metric: (delta, ci low, ci high), resampling images (each with
    all its settings); ECE is averaged over the settings of each resample."""
    from scipy.stats import bootstrap

    ids = sorted(set(base.sample_id) & set(other.sample_id))
    ca, ka, na, ba = (_cube(base, ids, c) for c in ("confidence", "correct", "nll", "brier"))
    cb, kb, nb, bb = (_cube(other, ids, c) for c in ("confidence", "correct", "nll", "brier"))
    rng = np.random.default_rng(seed)
    everything = np.arange(len(ids))
    sa, sb = _SortedSettings(ca, ka, bins), _SortedSettings(cb, kb, bins)
    out = {"ece": (100 * float(_ece_delta(sa, sb, everything)),) * 3}
    if len(ids) > 1:
        res = bootstrap((everything,), lambda i, axis=-1: 100 * _ece_delta(sa, sb, i),
                        vectorized=True, n_resamples=N_BOOT, method="percentile", rng=rng,
                        batch=max(1, 5_000_000 // ca.size))
        out["ece"] = (out["ece"][0], float(res.confidence_interval.low), float(res.confidence_interval.high))
    for name, a, b in (("nll", na, nb), ("brier", ba, bb)):
        d = (b - a).mean(0)  # per image, over its settings
        out[name] = (float(d.mean()),) * 3
        if len(ids) > 1 and np.ptp(d) > 0:
            r = bootstrap((d,), np.mean, vectorized=True, n_resamples=N_BOOT, method="percentile", rng=rng)
            out[name] = (float(d.mean()), float(r.confidence_interval.low), float(r.confidence_interval.high))
    return out


class _SortedSettings:
    """Each setting's images sorted by confidence once, so that the ECE of a bootstrap resample needs no sort: a
    resample is a count per image, its sorted order is the original one with each image repeated that many times,
    and a bin's gap is the difference of F, the running sum of (accuracy - confidence) over sorted positions, at
    the bin's edges. F is known at the end of each image; inside a tie group (which counts its mean accuracy, as
    in ``expected_calibration_error``) it runs linearly between the group's two ends. Equal to
    ``expected_calibration_error`` on the resampled arrays (tested); ``bench/calibration_speed.py`` times both."""

    def __init__(self, confidence: np.ndarray, correct: np.ndarray, bins: int):
        self.n = confidence.shape[-1]
        bins = max(1, min(bins, self.n))
        self.order = np.argsort(confidence, axis=-1, kind="stable")  # settings x images
        conf = np.take_along_axis(confidence, self.order, -1)
        self.value = np.take_along_axis(correct.astype(float), self.order, -1) - conf
        # the first and last sorted position of the tie group each position belongs to
        positions = np.broadcast_to(np.arange(self.n), conf.shape)
        first = np.ones(conf.shape, bool)
        first[:, 1:] = conf[:, 1:] != conf[:, :-1]
        last = np.ones(conf.shape, bool)
        last[:, :-1] = first[:, 1:]
        self.group_start = np.maximum.accumulate(np.where(first, positions, 0), axis=-1)
        self.group_end = np.minimum.accumulate(np.where(last, positions, self.n)[:, ::-1], axis=-1)[:, ::-1]
        sizes = self.n // bins + (np.arange(bins) < self.n % bins)
        self.edges = np.cumsum(sizes)[:-1]  # the inner bin edges, as positions in a resample of n

    def ece(self, counts: np.ndarray) -> np.ndarray:
        """resamples x settings ECE for ``counts`` (resamples x images: how often each image is drawn)."""
        r, (s, n) = len(counts), self.value.shape
        rows, base = np.arange(r * s)[:, None], (np.arange(r * s) * n)[:, None]
        w = counts.astype(float)[:, self.order]  # resamples x settings x sorted images
        f = np.zeros((r * s, n + 1))  # F before each sorted image, and at the end
        np.cumsum((w * self.value).reshape(r * s, n), axis=-1, out=f[:, 1:])
        # positions filled before each image, counted across all rows: every row holds n positions, so row k's
        # count is k * n plus its own, and one searchsorted finds the image each inner edge falls in
        filled = np.zeros(r * s * n + 1)
        np.cumsum(w, out=filled[1:])
        edges = base + self.edges
        at = np.searchsorted(filled[1:], edges, side="right") - base  # the image, as a sorted position in its row
        setting = rows % s
        g0, g1 = self.group_start[setting, at], self.group_end[setting, at] + 1  # its tie group: [g0, g1)
        p0, p1 = filled[base + g0], filled[base + g1]
        f0, f1 = f[rows, g0], f[rows, g1]
        cut = f0 + (edges - p0) * (f1 - f0) / (p1 - p0)
        bounds = np.concatenate([np.zeros((r * s, 1)), cut, f[:, -1:]], -1)
        return (np.abs(np.diff(bounds, axis=-1)).sum(-1) / n).reshape(r, s)


def _ece_delta(a: _SortedSettings, b: _SortedSettings, i):
    """Mean over settings of ECE(b) - ECE(a) on the images ``i`` (indices into the images); ``i`` may be a batch
    of resamples (resamples x images), giving one value per resample."""
    i = np.asarray(i, int)
    rows = i if i.ndim > 1 else i[None]
    counts = np.bincount((rows + (np.arange(len(rows)) * a.n)[:, None]).ravel(),
                         minlength=len(rows) * a.n).reshape(len(rows), a.n)
    d = b.ece(counts).mean(-1) - a.ece(counts).mean(-1)
    return d if i.ndim > 1 else d[0]


def _samples(results) -> pd.DataFrame:
    s = results.samples
    s = s[s.evaluation == "calibration"]
    return s.assign(group=[_setting_group(st, c) for st, c in zip(s.setting, s.corruption)])


def _bins(results) -> int:
    return int((results.run.suite_table("calibration") or {}).get("bins", 15))


def _siblings(s: pd.DataFrame) -> list[tuple[str, str]]:
    """(standard model, other model) for each model whose pair is a standard-attention model here."""
    meta = s.groupby("model", sort=True)[["attention", "pair"]].first()
    return [(m.pair, name) for name, m in meta.iterrows()
            if m.attention != "standard" and m.pair in meta.index and meta.loc[m.pair].attention == "standard"]


@dataclass
class CalibrationTables:
    """Everything the page and the csv show of calibration, computed once per results: per model and setting,
    per model and setting group (clean, corruptions: the mean over its settings, each shift) and per pair."""

    bins: int
    settings: pd.DataFrame  # model, attention, group, setting, n, ece, nll, brier
    summary: pd.DataFrame  # model, attention, setting (the group), settings, n, ece, nll, brier
    pairs: list[dict[str, Any]]


def aggregate(results) -> Optional[CalibrationTables]:
    import pandas as pd

    s = _samples(results)
    if s.empty:
        return None
    bins = _bins(results)
    per = pd.DataFrame([{"model": model, "attention": g.attention.iloc[0], "group": g.group.iloc[0],
                         "setting": setting, **_metrics(g, bins)}
                        for (model, setting), g in s.groupby(["model", "setting"], sort=True)])
    summ = pd.DataFrame([{"model": model, "attention": g.attention.iloc[0], "setting": group, "settings": len(g),
                          "n": g.n.iloc[0], **{m: float(g[m].mean()) for m in ("ece", "nll", "brier")}}
                         for (model, group), g in per.groupby(["model", "group"], sort=False)])
    return CalibrationTables(bins, per, summ, _pair_rows(s, bins))


def tables(agg: CalibrationTables) -> list[tuple[str, pd.DataFrame, list[str]]]:
    import pandas as pd

    summ = agg.summary
    rank = {g: i for i, g in enumerate(_in_order(summ.setting))}
    summ = summ.assign(rank=summ.setting.map(rank)).sort_values(["rank", "model"], kind="stable")
    df = pd.DataFrame({"model": summ.model, "attention": summ.attention,
                       "setting": [f"{g} (mean of {k} settings)" if k > 1 else g for g, k in zip(summ.setting,
                                                                                              summ.settings)],
                       "ECE (%)": [f"{100 * e:.2f}" for e in summ.ece], "NLL": [f"{x:.3f}" for x in summ.nll],
                       "Brier": [f"{x:.3f}" for x in summ.brier], "n": summ.n.astype(int).astype(str)})
    notes = [f"Expected calibration error over {agg.bins} equal-mass confidence bins, mean negative log-likelihood "
             "(nats) and multiclass Brier score (0 to 2); lower is better for all three. A corruption row is the "
             "mean over its settings of each setting's value. Per-image confidence, p_true, nll and brier are in "
             "the long table."]
    out = [("Calibration under shift", df, notes)]
    pairs = agg.pairs
    if pairs:
        pdf = pd.DataFrame({"model": [r["model"] for r in pairs], "baseline": [r["baseline"] for r in pairs],
                            "setting": [r["setting"] for r in pairs],
                            **{f"delta {m}": [f"{r[k][0]:+.{p}f} ({r[k][1]:+.{p}f} to {r[k][2]:+.{p}f})"
                                              for r in pairs] for m, k, p in (("ECE pp", "ece", 2),
                                                                             ("NLL", "nll", 3),
                                                                             ("Brier", "brier", 3))},
                            "n": [str(r["n"]) for r in pairs]})
        out.append(("Calibration: model minus its standard sibling", pdf,
                    [f"Same images; 95% percentile bootstrap over images ({N_BOOT} resamples; an image carries all "
                     "its corruption settings). Negative: the model is better calibrated than standard."]))
    return out


def _in_order(groups) -> list[str]:
    """clean, corruptions, then the shifts by name."""
    return sorted(set(groups), key=lambda g: ({CLEAN: 0, "corruptions": 1}.get(g, 2), g))


def _evaluation(group: str) -> str:
    """What the images of a setting group were, as the csv's evaluation column names it."""
    return {CLEAN: "clean", "corruptions": "corruption"}.get(group, "shift")


def _pair_rows(s: pd.DataFrame, bins: int) -> list[dict[str, Any]]:
    rows = []
    for base, model in _siblings(s):
        a, b = s[s.model == base], s[s.model == model]
        for group in _in_order(a.group):
            ga, gb = a[a.group == group], b[b.group == group]
            if gb.empty:
                continue
            d = _paired(ga, gb, bins)
            rows.append({"model": model, "baseline": base, "setting": group, "n": len(set(ga.sample_id)), **d})
    return rows


def csv(agg: CalibrationTables) -> list[dict[str, Any]]:
    """ECE rows of the tidy csv: every setting and each group's mean per model (error_pct), and each model
    minus its standard sibling per group (delta_pp with its interval)."""
    rows = [{"table": "ECE", "model": r.model, "attention": r.attention, "evaluation": _evaluation(r.group),
             "setting": r.setting.removeprefix(SHIFT), "n": r.n, "error_pct": 100 * r.ece}
            for r in agg.settings.itertuples()]
    rows += [{"table": "ECE", "model": r.model, "attention": r.attention, "evaluation": _evaluation(r.setting),
              "setting": f"all (mean of {r.settings} settings)", "n": r.n, "error_pct": 100 * r.ece}
             for r in agg.summary.itertuples() if r.settings > 1]
    rows += [{"table": "ECE", "model": r["model"], "baseline": r["baseline"], "evaluation": _evaluation(r["setting"]),
              "setting": "all" if r["setting"] == "corruptions" else r["setting"], "n": r["n"],
              "delta_pp": r["ece"][0], "delta_ci_low_pp": r["ece"][1], "delta_ci_high_pp": r["ece"][2]}
             for r in agg.pairs]
    return rows


# --- planning and running ------------------------------------------------------------------------------------
def plan(p: Planning) -> list[Job]:
    if getattr(p.suite, "calibration", None) is None:
        return []
    from .corruption import corruption_identity

    bs, jobs = p.suite.batch_size, []
    for m in p.models:
        jobs.append(Job(m, "calibration", CLEAN, len(p.data.clean), key=p.key(m, "calibration", p.data.clean)
                        | {"calibration": CLEAN}, chunk=bs))
    c = p.suite.corruptions
    if c:
        ds, source = p.data.corruption, corruption_identity(c)
        for st in c.settings():
            for m in p.models:
                k = p.key(m, "calibration", ds) | {"corruption": st.corruption, "severity": st.severity,
                                                   "source": source}
                jobs.append(Job(m, "calibration", st.key, len(ds), {"corruption": st.corruption,
                                                                     "severity": st.severity}, k, chunk=bs))
    for name, ds in p.data.shifts.items():
        for m in p.models:
            k = p.key(m, "calibration", ds) | {"shift": name, "protocol": "questbench.data.shifts/1"}
            jobs.append(Job(m, "calibration", SHIFT + name, len(ds), key=k, chunk=bs))
    return jobs


def _clean(*args):
    from ..evaluators.clean import evaluate_clean
    return evaluate_clean(*args, extra=probability_fields)


def _shift(*args):
    from ..evaluators.shift import evaluate_shift
    return evaluate_shift(*args, extra=probability_fields)


def _dataset(ctx, job: Job):
    return ctx.data.shifts[job.setting.removeprefix(SHIFT)] if job.setting.startswith(SHIFT) else ctx.data.clean


def _from_source(ctx, work: Work, advance: Advance) -> tuple[list[tuple[Job, list[Part]]], Work]:
    """The jobs whose rows the clean and corruption executors left (their forward passes, not run again), and the
    rest of the work."""
    done, rest = [], []
    for job, spans in work:
        rows = None
        if not job.setting.startswith(SHIFT):  # shift rows carry their protocol's fields: computed here
            ds = ctx.data.corruption if "corruption" in job.fields else ctx.data.clean
            ids = [ds.sample_ids[i] for a, b in spans for i in range(a, b)]
            rows = ctx.take(KIND.name, job.model, job.setting, ids)
        if rows is None:
            rest.append((job, spans))
        else:
            advance(len(rows))
            done.append((job, split(spans, rows, 0.0)))
    return done, rest


def execute(ctx, work: Work, advance: Advance) -> Iterator[tuple[Job, list[Part]]]:
    from .corruption import grid_executor

    done, work = _from_source(ctx, work, advance)
    yield from done
    grid = [(j, sp) for j, sp in work if "corruption" in j.fields]
    clean = [(j, sp) for j, sp in work if j.setting == CLEAN]
    shifts = [(j, sp) for j, sp in work if j.setting.startswith(SHIFT)]
    yield from per_sample("calibration", _dataset, _clean)(ctx, clean, advance)
    yield from per_sample("calibration", _dataset, _shift)(ctx, shifts, advance)
    yield from grid_executor("calibration", extra=probability_fields)(ctx, grid, advance)


def _samples_of(job) -> Optional[str]:
    if job.corruption is not None:
        return "corruption"
    return f"shift[{job.setting.removeprefix(SHIFT)}]" if job.setting.startswith(SHIFT) else "clean"


KIND = Kind(name="calibration", label="calibration", unit="images x settings", record=CalibrationRecord, plan=plan,
            execute=execute, samples_of=_samples_of, outcome=_consistent, aggregate=aggregate, tables=tables, csv=csv,
            section=CalibrationSpec, across_models=True, from_logits_of=("clean", "corruption"),
            logit_fields=probability_fields)
