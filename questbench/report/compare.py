"""Paired comparisons of two models on the samples both were evaluated on, and of trained pairs across seeds.

The sampled unit is the image. A single setting (clean, one corruption at one severity, one attack at one eps)
gets the exact McNemar test and a paired bootstrap over images; an aggregate over settings (all corruptions,
a whole eps sweep) keeps each image's settings together: a cluster bootstrap over images and a sign-flip
permutation test over images. p-values are Holm-adjusted within families read together: the headline (clean
and the aggregates), and each evaluation's single settings. Across seeds, trained pairs and images are both
resampled.

Across seeds the trained pair is the unit and there are few of them: the mean of the per-pair deltas gets a
Student t interval with k - 1 degrees of freedom whose variance adds the images the pairs share, and the larger
of that t test's p and the exact sign-flip test's over pairs (``metrics.seed_level_inference``; coverage checked
by simulation). With fewer than 6 pairs no two-sided p below 0.05 is possible, and the tables say so.

A corruption delta can be a clean offset: ``setting == "all-relative"`` is accuracy under corruption minus clean
accuracy on the same images (the "relative" corruption error of the mCE papers, accuracy-oriented: the drop),
per model, and the model-minus-baseline difference of those drops.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Optional, Union

import numpy as np
import pandas as pd

from ..errors import QuestbenchError
from ..config.corruptions import ALL_CORRUPTIONS
from ..stats.metrics import (SEED_METHOD, cluster_bootstrap, holm, mcnemar, min_sign_flip_p,
                       per_image_sums, resolves_5pp, seed_level_inference, sign_flip_test)
from ..store.results import Results, load_results
from ..config.labels import attack_family, attack_label, budget_label, corruption_label

COLUMNS = ["evaluation", "setting", "n_images", "baseline_acc", "model_acc", "delta_pp", "ci_low", "ci_high",
           "p_value", "p_holm", "test", "resolves_5pp"]
SEED_COLUMNS = ["attention", "evaluation", "setting", "n_pairs", "n_images", "per_pair_delta_pp", "delta_pp",
                "ci_low", "ci_high", "p_value", "p_floor", "method", "pairs", "se", "df"]
AGGREGATE = "all"
RELATIVE = "all-relative"
N_BOOT = 2000
N_PERMUTATIONS = 1999  # p resolution 1/2000 for aggregates; single settings use the exact McNemar test


def _results(results_or_dir: Union[Results, str, Path]) -> Results:
    return results_or_dir if isinstance(results_or_dir, Results) else load_results(results_or_dir)


def _corruption_order(c: str) -> int:
    return ALL_CORRUPTIONS.index(c) if c in ALL_CORRUPTIONS else len(ALL_CORRUPTIONS)


def settings_of(samples: pd.DataFrame) -> Iterator[tuple[str, str, pd.DataFrame, bool]]:
    """(evaluation label, setting label, rows, is aggregate) in reading order: clean; corruptions per
    setting, then all; each attack sweep per eps (ascending), then all eps > 0 (eps = 0 is the sweep's clean
    anchor, not an attack)."""
    clean = samples[samples.evaluation == "clean"]
    if not clean.empty:
        yield "clean", "clean", clean, False
    shift = samples[samples.evaluation == "shift"]
    for name, g in sorted(shift.groupby("setting")) if not shift.empty else []:
        yield "distribution shift", name, g, False
    corr = samples[samples.evaluation == "corruption"]
    if not corr.empty:
        for (c, s), g in sorted(corr.groupby(["corruption", "severity"]), key=lambda t: (_corruption_order(t[0][0]),
                                                                                        t[0][1])):
            yield "corruption", corruption_label(c, s), g, False
        yield "corruption", AGGREGATE, corr, True
        if not clean.empty:
            yield "corruption", RELATIVE, corr, True
    att = samples[samples.evaluation == "attack"]
    if not att.empty:
        att = att.assign(_family=sweep_keys(att))
        for n, (fam, g) in enumerate(sorted(att.groupby("_family"), key=lambda t: t[0])):
            label = attack_label(g.sort_values("eps").setting.iloc[-1])
            for eps, ge in sorted(g.groupby("eps"), key=lambda t: t[0]):
                if eps > 0:  # eps = 0 is the clean evaluation again (its sanity check is a leaderboard flag)
                    yield label, budget_label(ge.attack.iloc[0], eps), ge.drop(columns="_family"), False
            attacked = g[g.eps > 0]
            if attacked.eps.nunique() > 1:
                yield label, AGGREGATE, attacked.drop(columns="_family"), True


def sweep_keys(att: pd.DataFrame) -> list[str]:
    """Which sweep each attack row belongs to: its [[attacks]] entry (eps values of one entry form a sweep)."""
    return [f"{int(w):03d}" if pd.notna(w) else attack_family(s) for w, s in zip(att.sweep, att.setting)]


def _paired(ga: pd.DataFrame, gb: pd.DataFrame) -> pd.DataFrame:
    key = ["setting", "sample_id"]
    return ga[key + ["correct"]].merge(gb[key + ["correct"]], on=key, suffixes=("_a", "_b"))


def paired_sums(samples: pd.DataFrame, g: pd.DataFrame, setting: str, baseline: str, model: str
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Per shared image (sorted ids): baseline's and model's correct counts over the rows of ``g`` and the
    settings seen; None when they share nothing. For ``RELATIVE`` the counts become corruption-minus-clean:
    a' = a + m * b_clean, b' = b + m * a_clean, so sum(b' - a') / sum(m) is the model's drop minus the baseline's
    (images without a clean outcome for both models are left out)."""
    merged = _paired(g[g.model == baseline], g[g.model == model])
    if setting == RELATIVE:
        clean = samples[samples.evaluation == "clean"]
        cl = _paired(clean[clean.model == baseline], clean[clean.model == model])
        merged = merged[merged.sample_id.isin(set(cl.sample_id))]
    if merged.empty:
        return None
    a, b, m = per_image_sums(merged.sample_id, merged.correct_a, merged.correct_b)
    ids = np.unique(merged.sample_id.to_numpy())
    if setting == RELATIVE:
        cl = cl.set_index("sample_id").loc[ids]
        a, b = a + m * cl.correct_b.to_numpy(float), b + m * cl.correct_a.to_numpy(float)
    return ids, a, b, m


def _single_setting_ci(a: np.ndarray, b: np.ndarray, seed: int) -> tuple[float, float]:
    """Paired bootstrap over images for one setting. Each image's difference is -1, 0 or +1, so a resample is
    a multinomial draw over those three counts: the same distribution as resampling images, at O(1) cost."""
    d = b.astype(int) - a.astype(int)
    n = d.size
    probs = np.array([(d == -1).sum(), (d == 0).sum(), (d == 1).sum()]) / n
    draws = np.random.default_rng(seed).multinomial(n, probs, size=N_BOOT)
    deltas = 100 * (draws[:, 2] - draws[:, 0]) / n
    lo, hi = np.percentile(deltas, [2.5, 97.5])
    return float(lo), float(hi)


def compare(results_or_dir, baseline: str, model: str, seed: int = 0) -> pd.DataFrame:
    """``model`` minus ``baseline`` on their shared samples, one row per setting and one per aggregate
    (``setting == "all"``); columns as in ``COLUMNS`` (accuracies and deltas in percent / pp)."""
    res = _results(results_or_dir)
    known = set(res.samples.model.unique())
    for name in (baseline, model):
        if name not in known:
            raise QuestbenchError(f"model {name!r} has no results here")
    s = res.samples[res.samples.model.isin([baseline, model])]  # once: a study's page compares 30 pairs
    rows = []
    for evaluation, setting, g, aggregate in settings_of(s):
        sums = paired_sums(s, g, setting, baseline, model)
        if sums is None:
            continue
        _, a, b, m = sums
        if aggregate:
            ci = cluster_bootstrap(a, b, m, n_boot=N_BOOT, seed=seed)
            lo, hi = ci["ci_low"], ci["ci_high"]
            p, test = sign_flip_test(a, b, n_resamples=N_PERMUTATIONS, seed=seed), "sign-flip over images"
        else:
            merged = _paired(g[g.model == baseline], g[g.model == model])
            lo, hi = _single_setting_ci(merged.correct_a.to_numpy(bool), merged.correct_b.to_numpy(bool), seed)
            p, test = mcnemar(merged.correct_a, merged.correct_b)["p_value"], "McNemar (exact)"
        if setting == RELATIVE:  # each model's drop (corruption minus clean accuracy) on these images
            base_acc, model_acc = _drop(s, g, baseline, sums[0]), _drop(s, g, model, sums[0])
        else:
            base_acc, model_acc = 100 * a.sum() / m.sum(), 100 * b.sum() / m.sum()
        rows.append({"evaluation": evaluation, "setting": setting, "n_images": len(a),
                     "baseline_acc": base_acc, "model_acc": model_acc,
                     "delta_pp": 100 * (b.sum() - a.sum()) / m.sum(), "ci_low": lo, "ci_high": hi, "p_value": p,
                     "test": test, "resolves_5pp": resolves_5pp(len(a))})
    df = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "p_holm"])
    if df.empty:
        raise QuestbenchError(f"{baseline} and {model} share no evaluated samples")
    # families of tests read together: the headline (clean and every aggregate), and the single settings of
    # each evaluation; an aggregate is not diluted by the 75 settings it summarizes
    family = np.where(df.setting.isin([AGGREGATE, RELATIVE]) | (df.evaluation == "clean"), "headline", df.evaluation)
    df["p_holm"] = np.nan
    for _, idx in df.groupby(family, sort=False).groups.items():
        df.loc[idx, "p_holm"] = holm(df.loc[idx, "p_value"].tolist())
    return df[COLUMNS].reset_index(drop=True)


def _drop(samples: pd.DataFrame, corr: pd.DataFrame, model: str, ids: np.ndarray) -> float:
    """``model``'s accuracy under corruption minus its clean accuracy, on ``ids`` (pp; negative is a drop)."""
    c = corr[(corr.model == model) & corr.sample_id.isin(ids)]
    clean = samples[(samples.evaluation == "clean") & (samples.model == model) & samples.sample_id.isin(ids)]
    return 100 * (float(c.correct.mean()) - float(clean.correct.mean()))


def standard_pairs(samples: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(standard model, other model, other's attention) for every model whose ``pair`` is a standard one here."""
    meta = samples.groupby("model", sort=True)[["attention", "pair"]].first()
    out = []
    for model, m in meta.iterrows():
        if m.attention != "standard" and m.pair in meta.index and meta.loc[m.pair].attention == "standard":
            out.append((m.pair, model, m.attention))
    return out


def compare_pairs(results_or_dir, seed: int = 0) -> pd.DataFrame:
    """Every model against its standard-attention sibling: ``compare`` rows with ``model`` and ``baseline``."""
    res = _results(results_or_dir)
    frames = [compare(res, base, model, seed=seed).assign(model=model, baseline=base)
              for base, model, _ in standard_pairs(res.samples)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS + ["model", "baseline"])


def _seeds_by_base(samples: pd.DataFrame) -> dict[str, dict[str, str]]:
    """standard model -> {attention kind: the model of that kind paired with it} (one trained seed each)."""
    seeds: dict[str, dict[str, str]] = {}
    for base, model, kind in standard_pairs(samples):
        seeds.setdefault(base, {})[kind] = model
    return seeds


def contrast_table(res: Results, contrasts: dict[str, dict[str, float]],
                   cache: Optional[dict] = None) -> list[dict]:
    """Seed-level inference of weighted sums of kind-minus-standard deltas: ``contrasts`` maps a name to
    {kind: weight}. Each seed that holds every weighted kind contributes one per-image delta (its kinds'
    deltas against the seed's standard model, weighted and summed: standard cancels from a contrast between
    kinds), for every aggregate and single setting (other than single corruptions) that all its models share on
    the same images; ``metrics.seed_level_inference`` over the seeds. Contrasts with fewer than 2 seeds are left
    out. ``cache``: each (evaluation, setting, standard model, model)'s per-image sums, computed once and shared
    by every contrast that needs them (and by the callers that pass the same dict)."""
    s = res.samples
    seeds = _seeds_by_base(s)
    cache = {} if cache is None else cache
    rows = []
    for name, weights in contrasts.items():
        kinds = [k for k, w in weights.items() if w]
        bases = [b for b, km in seeds.items() if all(k in km for k in kinds)]
        if len(bases) < 2:
            continue
        # seed order: by the contrast's first kind's model name (the order of the per-pair column)
        bases.sort(key=lambda b: seeds[b][kinds[0]])
        names = {m for b in bases for m in [b] + [seeds[b][k] for k in kinds]}
        for evaluation, setting, g, aggregate in settings_of(s[s.model.isin(names)]):
            if evaluation == "corruption" and not aggregate:
                continue  # per-corruption seed tables would be 75 rows per contrast; the aggregate carries the claim
            def sums(base: str, model: str, evaluation=evaluation, setting=setting, g=g):
                key = (evaluation, setting, base, model)
                if key not in cache:
                    cache[key] = paired_sums(s, g, setting, base, model)
                return cache[key]

            x = _contrast_deltas(sums, [{k: seeds[b][k] for k in kinds} | {"": b} for b in bases], weights)
            if x is None:
                continue
            r = seed_level_inference(x)
            rows.append({"contrast": name, "evaluation": evaluation, "setting": setting, "n_pairs": len(bases),
                         "n_images": x.shape[1], "per_pair_delta_pp": ", ".join(f"{v:+.2f}" for v in r["per_pair"]),
                         "delta_pp": r["delta_pp"], "ci_low": r["ci_low"], "ci_high": r["ci_high"], "se": r["se"],
                         "df": r["df"], "p_value": r["p_value"], "p_floor": min_sign_flip_p(len(bases)),
                         "method": SEED_METHOD, "models": [{k: seeds[b][k] for k in kinds} for b in bases],
                         "bases": list(bases)})
    return rows


def _contrast_deltas(paired: Callable, seeds: list[dict[str, str]], weights: dict[str, float]) -> np.ndarray | None:
    """(seeds, images) weighted per-image deltas, or None when some model lacks the setting or the seeds' models
    were evaluated on different images. ``paired(base, model)``: ``paired_sums`` of the setting."""
    x, ids_ref = [], None
    for models in seeds:
        base, total = models[""], None
        for kind, w in weights.items():
            if not w:
                continue
            sums = paired(base, models[kind])
            if sums is None or (ids_ref is not None and not np.array_equal(sums[0], ids_ref)):
                return None
            ids_ref, (_, a, b, m) = sums[0], sums
            # the row's mean over images is this seed's delta (each image weighted by its settings seen)
            d = w * (100 * (b - a) * len(m) / m.sum())
            total = d if total is None else total + d
        x.append(total)
    return np.stack(x)


def compare_seeds(results_or_dir, seed: int = 0, cache: Optional[dict] = None) -> pd.DataFrame:
    """Per attention kind with two or more trained pairs: each pair's delta, their mean, a seed-level 95%
    interval and p-value (``metrics.seed_level_inference``), for every aggregate and single setting (other than
    single corruptions) that all pairs share on the same images. ``seed`` is unused (the method draws nothing);
    it is kept so every compare function takes the same arguments. ``cache``: as in ``contrast_table``."""
    res = _results(results_or_dir)
    kinds = sorted({kind for _, _, kind in standard_pairs(res.samples)})
    rows = [{**r, "attention": r["contrast"], "pairs": ", ".join(f"{m[r['contrast']]} - {b}"
                                                                 for m, b in zip(r["models"], r["bases"]))}
            for r in contrast_table(res, {k: {k: 1.0} for k in kinds}, cache)]
    return pd.DataFrame(rows, columns=SEED_COLUMNS)


CONTRAST_COLUMNS = ["family", "contrast", "evaluation", "setting", "n_pairs", "n_images", "per_pair_delta_pp",
                    "delta_pp", "ci_low", "ci_high", "se", "df", "p_value", "p_floor", "method"]


def compare_kinds(results_or_dir, seed: int = 0, cache: Optional[dict] = None) -> pd.DataFrame:
    """Every attention kind against every other kind, and (with all four kinds) the factorial main effects of key
    and query normalization and their interaction: seed-level rows like ``compare_seeds``', one per contrast
    and setting (``stats.study``). ``seed`` is unused, as in ``compare_seeds``; ``cache`` as in ``contrast_table``."""
    from ..stats.study import factorial_contrasts, kind_contrasts

    res = _results(results_or_dir)
    kinds = sorted({kind for _, _, kind in standard_pairs(res.samples)})
    cache = {} if cache is None else cache
    rows = [{**r, "family": "kinds"} for r in contrast_table(res, kind_contrasts(kinds), cache)]
    rows += [{**r, "family": "factorial"} for r in contrast_table(res, factorial_contrasts(kinds), cache)]
    return pd.DataFrame(rows, columns=CONTRAST_COLUMNS)
