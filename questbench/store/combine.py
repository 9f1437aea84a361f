"""Several results folders read as one: runs of the same suite on other machines, or of other models on the same
data, joined into one leaderboard. Each folder is verified on its own first (every job's digest and identity,
``load_results``); then everything that decides what a row means must agree between them, else one line names
the first difference. Each model keeps its own provenance (folder, device, library versions)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from ..errors import QuestbenchError

# suite keys that by design compute nothing (README, "Every setting recorded is one that ran"), and where the
# suite file was and its text's hash: they may differ between joined folders
_FREE_SUITE_KEYS = ("name", "description", "models", "registry", "device", "num_workers", "path", "sha256")


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        flat: dict[str, Any] = {}
        for k, v in obj.items():
            flat.update(_flatten(v, f"{prefix}{k}."))
        return flat
    if isinstance(obj, list) and obj and all(isinstance(v, (dict, list)) for v in obj):
        flat = {}
        for i, v in enumerate(obj):
            flat.update(_flatten(v, f"{prefix}{i}."))
        return flat
    return {prefix.rstrip("."): obj}


def _short(v: Any) -> str:
    text = json.dumps(v, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def describe_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """'seed 0 -> 1; data.samples 2000 -> 100' for the keys whose values differ (at most 4 named)."""
    a, b = _flatten(old), _flatten(new)
    keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if len(keys) > 1:  # the suite file's hash changes with any setting in it: name the setting instead
        keys = [k for k in keys if k != "suite_sha256"]
    if keys == ["suite_sha256"]:
        return "same settings, different suite file text"
    named = [f"{k} {_short(a.get(k))} -> {_short(b.get(k))}" for k in keys[:4]]
    return "; ".join(named) + (f"; and {len(keys) - 4} more" if len(keys) > 4 else "")


def _what_rows_mean(prov: dict[str, Any]) -> dict[str, Any]:
    """The part of a folder's provenance that every folder joined with it must share: the evaluation settings
    (the suite without the keys that compute nothing), seed, limit, precision, the dataset's content and the
    sample ids of every evaluation, and which code made the corrupted images."""
    suite = {k: v for k, v in prov.get("suite", {}).items() if k not in _FREE_SUITE_KEYS}
    dataset = {k: v for k, v in prov.get("dataset", {}).items() if k != "source"}  # a path differs per machine
    return {"suite": suite, "seed": prov.get("seed"), "limit": prov.get("limit"), "dtype": prov.get("dtype"),
            "dataset": dataset, "sample_ids": prov.get("sample_ids"),
            "corruption_implementation": prov.get("corruption_implementation")}


def combine_results(folders: Sequence[Path], loaded: Sequence[Any]):
    """One ``Results`` from the verified results of several folders (``loaded[i]`` read from ``folders[i]``)."""
    from .results import Results

    first, base = folders[0], _what_rows_mean(loaded[0].provenance)
    owner: dict[str, Path] = {}
    for folder, res in zip(folders, loaded):
        here = _what_rows_mean(res.provenance)
        if here != base:  # the settings first: the sample ids follow from them (seed, samples)
            settings = [{k: v for k, v in d.items() if k != "sample_ids"} for d in (base, here)]
            diff = describe_difference(*settings) if settings[0] != settings[1] else \
                describe_difference({"sample_ids": base["sample_ids"]}, {"sample_ids": here["sample_ids"]})
            raise QuestbenchError(f"{folder} cannot join {first} in one leaderboard: its results were made with "
                                  f"another configuration ({diff})")
        for model in res.provenance.get("models", {}):
            if model in owner:
                raise QuestbenchError(f"model {model!r} is in both {owner[model]} and {folder}: give each model's "
                                      "results once")
            owner[model] = folder
    models, jobs, sources = {}, {}, []
    for folder, res in zip(folders, loaded):
        p = res.provenance
        for name, m in p.get("models", {}).items():
            models[name] = {**m, "folder": str(folder), "device_name": p.get("device_name"),
                            "versions": p.get("versions", {})}
        jobs.update(p.get("jobs", {}))
        sources.append({"folder": str(folder), "device_name": p.get("device_name"), "device": p.get("device"),
                        "versions": p.get("versions", {}), "suite_sha256": p.get("suite_sha256"),
                        "models": sorted(p.get("models", {}))})
    devices = sorted({s["device_name"] for s in sources})
    prov = {**loaded[0].provenance, "models": models, "jobs": jobs, "sources": sources,
            "suite": {**loaded[0].provenance.get("suite", {}), "models": sorted(models)},
            "device_name": devices[0] if len(devices) == 1 else "several: " + "; ".join(devices)}
    prov.pop("sha256", None)  # each folder's own digest was checked; the joined document is not a file
    frames = [r.samples for r in loaded if not r.samples.empty]
    samples = pd.concat(frames, ignore_index=True) if frames else loaded[0].samples
    diags = [r.diagnostics for r in loaded if not r.diagnostics.empty]
    return Results(samples=samples, jobs=pd.concat([r.jobs for r in loaded], ignore_index=True),  # typed on creation
                   diagnostics=pd.concat(diags, ignore_index=True) if diags else loaded[0].diagnostics,
                   provenance=prov, missing_jobs=sorted(j for r in loaded for j in r.missing_jobs))


def select_models(results, names: Sequence[str]):
    """The results of ``names`` only (in the order given), as they are in ``results``: a page of a subset, such as
    the standard/QUEST pairs of a four-kind study, without running those models again. Each model's jobs, samples
    and provenance are kept untouched; the provenance says how many models the results held."""
    from dataclasses import replace

    from .._io import slug

    held = sorted(results.provenance.get("models", {}))
    unknown = [n for n in names if n not in held]
    if unknown:
        raise QuestbenchError(f"--models: {unknown[0]!r} is not in these results (they hold "
                              f"{', '.join(held)})")
    if len(set(names)) != len(names):
        raise QuestbenchError("--models names a model twice")
    keep = set(names)
    prefixes = tuple(slug(f"{n}__") for n in names)

    def rows(df: pd.DataFrame) -> pd.DataFrame:
        return df if df.empty or "model" not in df else df[df["model"].isin(keep)].reset_index(drop=True)

    p = results.provenance
    prov = {**p, "models": {n: p["models"][n] for n in names},
            "jobs": {j: h for j, h in p.get("jobs", {}).items() if j.startswith(prefixes)},
            "suite": {**p.get("suite", {}), "models": list(names)}, "selected_from": len(held)}
    prov.pop("sha256", None)  # the folder's digest was checked; the selection is not a file
    return replace(results, samples=rows(results.samples), jobs=rows(results.jobs),
                   diagnostics=rows(results.diagnostics), provenance=prov,
                   missing_jobs=[j for j in results.missing_jobs if j.startswith(prefixes)])
