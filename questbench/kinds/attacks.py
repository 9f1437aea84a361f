"""Adversarial attacks: every [[attacks]] sweep of the suite (kind ``attack``) and the runs that check them
(kind ``check``: more steps, a large budget, a transfer from the paired model), one record per image and attack
setting with the clean prediction beside the adversarial one."""
from __future__ import annotations

import time
from typing import Iterator

from pydantic import StrictBool, StrictInt

from .base import Advance, Job, Kind, Part, Planning, SampleRecord, Work, naming, split


class AttackRecord(SampleRecord):
    clean_pred: StrictInt
    clean_correct: StrictBool


def _robust_only_when_clean(r: dict) -> bool:
    return r["clean_correct"] == (r["clean_pred"] == r["label"]) and \
        r["correct"] == (r["pred"] == r["label"] and r["clean_correct"])


def _planner(kind: str):
    """Jobs of the sweeps that are (``check``) or are not (``attack``) attack checks, in sweep order."""
    def plan(p: Planning) -> list[Job]:
        jobs = []
        for a_idx, spec in enumerate(p.suite.sweeps):
            if bool(spec.check) != (kind == "check"):
                continue
            bs = spec.batch_size or p.suite.batch_size
            ds = p.data.attacks[a_idx]
            for cfg in spec.configs:
                for m in p.models:
                    k = p.key(m, kind, ds) | {"attack": cfg.resolved(), "batch_size": bs}
                    fields = {"attack": cfg.attack, "norm": cfg.norm, "eps": cfg.eps, "a_idx": a_idx, "config": cfg}
                    setting = cfg.key if not spec.check else f"check:{spec.check}/{cfg.key}"
                    if spec.check:
                        k["check"] = spec.check
                    if spec.check == "transfer":
                        source = p.partners.get(m)
                        if source is None:  # a model without a trained partner has no transfer check
                            continue
                        k["source"] = {"model": source, "model_sha256": p.model_fp[source],
                                       "model_architecture": p.model_arch.get(source)}
                        fields["source"] = source
                        setting += f"/from={source}"
                    jobs.append(Job(m, kind, setting, len(ds), fields, k, chunk=bs))
        return jobs
    return plan


def cost(job: Job, n: int) -> float:
    cfg = job.fields["config"]
    if cfg.eps == 0:
        return float(n)
    r = cfg.resolved()
    return n * (r.get("restarts") or 1) * (r.get("steps") or 1) * (40 if cfg.attack == "autoattack" else 1)


def execute(ctx, work: Work, advance: Advance) -> Iterator[tuple[Job, list[Part]]]:
    from ..config.labels import attack_label, budget_label
    from ..config.settings import PatchConfig
    from ..evaluators.attacks import evaluate_attack
    from ..evaluators.common import run_with_batch_fallback
    from ..evaluators.patch import evaluate_patch

    for job, spans in work:
        cfg = job.fields["config"]
        spec = ctx.suite.sweeps[job.fields["a_idx"]]
        ds = ctx.data.attacks[job.fields["a_idx"]]
        ctx.show(job.evaluation, f"{job.model} {attack_label(job.setting)} {budget_label(job.fields['attack'], cfg.eps)}")
        evaluate = evaluate_patch if isinstance(cfg, PatchConfig) else evaluate_attack
        source = {"source": ctx.models[job.fields["source"]]} if "source" in job.fields else {}
        t0 = time.perf_counter()
        with naming(job):
            result = run_with_batch_fallback(
                lambda bs: evaluate(ctx.models[job.model], ds, cfg, seed=ctx.suite.seed, batch_size=bs,
                                    device=ctx.device, precision=ctx.suite.precision, on_batch=advance, spans=spans,
                                    **source),
                spec.batch_size or ctx.suite.batch_size)
        yield job, split(spans, result.records, time.perf_counter() - t0, result.flags, result.config)


def _samples(job) -> str:
    return f"attack[{job.sweep}]"  # the sweep's sample ids (a check draws from its own seeded subset)


ATTACK = Kind(name="attack", label="attacks", unit="images x attack settings", record=AttackRecord,
              plan=_planner("attack"), execute=execute, samples_of=_samples, outcome=_robust_only_when_clean,
              drawn=True, cost=cost)
CHECK = Kind(name="check", label="attack checks", unit="images x check attacks", record=AttackRecord,
             plan=_planner("check"), execute=execute, samples_of=_samples, outcome=_robust_only_when_clean,
             drawn=True, cost=cost)
