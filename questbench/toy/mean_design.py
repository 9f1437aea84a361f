"""The toy example's second design (`questbench toy --design mean`, the default): a model in which the paper's
mechanism can act, with instability measured.

Why a second design: in the first one (``--design cls``, questbench/toy/cls_design.py) a learned query token reads the
answer, so a query's norm is a constant and QUEST is QKNorm-HS in disguise, and a token MLP can build a bias
detector without touching the attention. Here **every token queries**, through one attention layer of the kind
under test on a linear embedding; the output is the mean over tokens of residual + attention output, then a
Linear-GELU-Linear head. Per-query sharpness (QUEST's point) and key-norm growth (what standard attention can do
to fit the shortcut) both matter.

Per run: accuracy on fresh unbiased samples, biased samples and a **conflict set** (an unbiased answer plus one
distractor drawn from the shortcut's N(b, 0.1 I): the shortcut now points at a wrong token), the Bayes-optimal
unbiased accuracy on the same evaluation samples, and instability: non-finite loss, max |attention logit| > 1e3,
mean attention entropy < 0.1 nats, or a loss spike (10-step mean > 2 x its running minimum + 0.5). Max logit,
entropy, query/key norms and loss are logged every 50 steps. **Success**: unbiased accuracy >= 0.9 x Bayes and
stable. Every cell is trained twice with the same seeds, biased fraction 0.5 and 0: the paired drop in unbiased
accuracy is the **shortcut harm**.
"""
from __future__ import annotations

import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import QuestbenchError
from .cls_design import ToyConfig, ToyRetriever, make_data, shortcut_bias, training_setup
from .common import bayes_class_accuracy, success_heatmap, tidy_csv

MEAN_KINDS = ("standard", "qnorm", "qknorm_hs", "quest", "qknorm_ds")
SUCCESS_OF_BAYES = 0.9
MAX_LOGIT, MIN_ENTROPY = 1e3, 0.1

MEAN_PRESETS = {
    "quick": dict(lrs=(3e-3, 3e-2), wds=(0.0, 0.1), init_seeds=(0, 1), data_seeds=(0,), steps=600,
                  kinds=("standard", "qnorm", "qknorm_hs", "quest")),
    "full": dict(lrs=(1e-3, 3e-3, 1e-2, 3e-2, 1e-1), wds=(0.0, 0.01, 0.1), init_seeds=(0, 1, 2, 3), data_seeds=(0, 1),
                 steps=1500, kinds=MEAN_KINDS),
    # closer to the paper's description: q and k from each token's key part without bias, v from its value part;
    # a finer learning-rate grid with a short warmup, so each kind's stable range is resolved
    "split": dict(lrs=(0.01, 0.02, 0.03, 0.05, 0.07), wds=(0.0, 0.1), init_seeds=(0, 1, 2, 3), data_seeds=(0, 1),
                  steps=1500, kinds=MEAN_KINDS, warmup_steps=100, qk_from_key_part=True),
    # the split design with a learned qkv bias: without it keys are bias-free maps of zero-mean key parts, so the
    # answer's larger variance shows only as key norm, which key normalization removes (issue 39). 5 init x 5 data
    # seeds per cell with the data seed the unit of the statistics; data seeds outermost, so a grid stopped part
    # way holds whole data seeds
    "split-bias": dict(lrs=(0.01, 0.02, 0.03, 0.05, 0.07), wds=(0.0, 0.1), init_seeds=(0, 1, 2, 3, 4),
                       data_seeds=(0, 1, 2, 3, 4), steps=1500, kinds=("standard", "qnorm", "qknorm_hs", "quest"),
                       warmup_steps=100, qk_from_key_part=True, split_qkv_bias=True, data_seed_major=True),
    "split-bias-quick": dict(lrs=(0.02, 0.05), wds=(0.0,), init_seeds=(0, 1), data_seeds=(0, 1), steps=600,
                             kinds=("standard", "qnorm", "qknorm_hs", "quest"), warmup_steps=50,
                             qk_from_key_part=True, split_qkv_bias=True, data_seed_major=True),
    # the first design (a learned query token reads the answer; questbench/toy/cls_design.py) on its own grid, run
    # by this design's runner so it gets the fraction-0 control, the conflict set and the instability flags
    "cls": dict(lrs=(1e-3, 3e-3, 1e-2), wds=(0.0, 0.1), init_seeds=(0, 1, 2), data_seeds=(0, 1), steps=1500,
                kinds=("standard", "qnorm", "qknorm_hs", "quest"), query_token=True),
    "cls-quick": dict(lrs=(1e-3, 1e-2), wds=(0.0, 0.1), init_seeds=(0, 1), data_seeds=(0,), steps=600,
                      kinds=("standard", "qnorm", "qknorm_hs", "quest"), query_token=True),
    "split-quick": dict(lrs=(0.02, 0.05), wds=(0.0,), init_seeds=(0, 1), data_seeds=(0,), steps=600,
                        kinds=("standard", "qnorm", "qknorm_hs", "quest"), warmup_steps=50, qk_from_key_part=True),
}
FRACTIONS = (0.5, 0.0)


class _Mask(nn.Module):
    """A fixed 0/1 mask on a weight (torch parametrization): the masked entries stay zero through training."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.mask


class SplitRetriever(nn.Module):
    """The split design: each token is [key part (key_dim), one-hot value (values)]; the attention layer of the
    kind under test reads queries and keys from the key part only and values from the value part only (its qkv
    weight is masked block-wise), so a normalized key carries no magnitude from elsewhere; without a bias unless
    ``cfg.split_qkv_bias``. Output: the mean over tokens of residual + attention output, then a Linear-GELU-Linear
    head."""

    def __init__(self, cfg: ToyConfig, kind: str):
        from torch.nn.utils import parametrize

        from ..models.attention import attention_class
        super().__init__()
        dim = cfg.key_dim + cfg.values
        self.attn = attention_class(kind)(dim, num_heads=1, qkv_bias=cfg.split_qkv_bias)
        mask = torch.zeros(3 * dim, dim)
        mask[: 2 * dim, : cfg.key_dim] = 1  # q and k rows read the key part
        mask[2 * dim:, cfg.key_dim:] = 1  # v rows read the value part
        parametrize.register_parametrization(self.attn.qkv, "weight", _Mask(mask))
        self.head = nn.Sequential(nn.Linear(dim, cfg.width), nn.GELU(), nn.Linear(cfg.width, cfg.values))
        self.values = cfg.values

    def forward(self, x, c):
        e = torch.cat([x, F.one_hot(c, self.values).float()], -1)
        return self.head((e + self.attn(e)).mean(1))


class MeanRetriever(nn.Module):
    def __init__(self, cfg: ToyConfig, kind: str):
        from ..models.attention import attention_class
        super().__init__()
        self.embed = nn.Linear(cfg.key_dim + cfg.values, cfg.width)
        self.attn = attention_class(kind)(cfg.width, num_heads=1, qkv_bias=True)
        self.head = nn.Sequential(nn.Linear(cfg.width, cfg.width), nn.GELU(), nn.Linear(cfg.width, cfg.values))
        self.values = cfg.values

    def forward(self, x, c):
        e = self.embed(torch.cat([x, F.one_hot(c, self.values).float()], -1))
        return self.head((e + self.attn(e)).mean(1))


@dataclass
class MeanRun:
    attention: str
    lr: float
    wd: float
    init_seed: int
    data_seed: int
    biased_fraction: float
    acc_unbiased: float
    acc_biased: float
    acc_conflict: float
    bayes_unbiased: float
    success: bool
    unstable: bool
    unstable_reason: str
    max_logit: float
    min_entropy: float
    final_loss: float
    wall_s: float
    trace: list = field(default_factory=list)  # (step, loss, max |logit|, entropy, mean |q|, mean |k|)
    # mean norm of the answer token's key (before any normalization) on the held-out biased and unbiased sets:
    # the paper's mechanism is standard attention growing the biased answers' keys (nan in runs made before)
    key_norm_biased: float = math.nan
    key_norm_unbiased: float = math.nan

    @property
    def key(self) -> tuple:
        return (self.attention, self.lr, self.wd, self.init_seed, self.data_seed, self.biased_fraction)


def _attention_probe(model: MeanRetriever, x, c) -> tuple[float, float, float, float]:
    """(max |logit|, mean entropy, mean |q|, mean |k|) of the attention layer on a batch."""
    from ..models.attention import tap_attention
    seen = {}

    def cb(module, q, k, attn):
        qq, kk, scale = module.transform_qk(q, k)
        logits = scale * qq @ kk.transpose(-2, -1)
        seen.update(logit=float(logits.abs().max()),
                    entropy=float(-(attn * attn.clamp_min(1e-12).log()).sum(-1).mean()),
                    q=float(q.norm(dim=-1).mean()), k=float(k.norm(dim=-1).mean()))

    with torch.no_grad(), tap_attention(model, cb):
        model(x, c)
    return seen["logit"], seen["entropy"], seen["q"], seen["k"]


def answer_key_norm(model: nn.Module, x, c, pos) -> float:
    """Mean norm of the answer tokens' raw keys (what the kind then normalizes, or not) on these samples."""
    from ..models.attention import tap_attention
    seen = {}

    def cb(module, q, k, attn):
        seen["k"] = k[:, 0].norm(dim=-1)  # (samples, tokens) of the one head

    with torch.no_grad(), tap_attention(model, cb):
        model(x, c)
    return float(seen["k"][torch.arange(len(pos)), pos + getattr(model, "answer_offset", 0)].mean())


def _model(cfg: ToyConfig, kind: str) -> nn.Module:
    if cfg.query_token:
        return ToyRetriever(cfg, kind)
    return (SplitRetriever if cfg.qk_from_key_part else MeanRetriever)(cfg, kind)


def conflict_set(cfg: ToyConfig, n: int, gen: torch.Generator, bias: torch.Tensor):
    """Unbiased answers plus one distractor at another position drawn from the shortcut N(b, 0.1 I)."""
    x, c, pos, _ = make_data(cfg, n, 0.0, gen, bias)
    lure = (pos + torch.randint(1, cfg.tokens, (n,), generator=gen)) % cfg.tokens
    x[torch.arange(n), lure] = bias + math.sqrt(cfg.bias_var) * torch.randn(n, cfg.key_dim, generator=gen)
    return x, c, pos


def bayes_accuracy(cfg: ToyConfig, x: torch.Tensor, c: torch.Tensor, pos: torch.Tensor) -> float:
    """The Bayes rule's accuracy on these very unbiased samples: the answer's class with the largest posterior
    (common.bayes_class_accuracy): the ceiling of a model's unbiased accuracy."""
    return bayes_class_accuracy(x, c, pos, cfg.signal_dims, cfg.signal_var, cfg.values)


def evaluation_sets(cfg: ToyConfig, data_seed: int, bias: torch.Tensor):
    """The held-out unbiased, biased and conflict sets of a data seed: the same for both biased fractions and
    every kind, init seed and learning rate (a pure function of the seed)."""
    eval_gen = torch.Generator().manual_seed(30_000 + data_seed)
    unbiased = make_data(cfg, cfg.eval_size, 0.0, eval_gen, bias)[:3]
    biased = make_data(cfg, cfg.eval_size, 1.0, eval_gen, bias)[:3]
    return unbiased, biased, conflict_set(cfg, cfg.eval_size, eval_gen, bias)


def evaluation_bayes(cfg: ToyConfig, data_seed: int) -> float:
    """The Bayes ceiling on a data seed's unbiased evaluation set (what each of its runs is scored against)."""
    _, bias = shortcut_bias(cfg, data_seed)
    xu, cu, pu = evaluation_sets(cfg, data_seed, bias)[0]
    return bayes_accuracy(cfg, xu, cu, pu)


def train_mean(cfg: ToyConfig, kind: str, lr: float, wd: float, init_seed: int, data_seed: int,
               biased_fraction: float) -> MeanRun:
    start = time.perf_counter()
    gen, bias = shortcut_bias(cfg, data_seed)
    x, c, pos, _ = make_data(cfg, cfg.train_size, biased_fraction, gen, bias)
    (xu, cu, pu), (xb, cb, pb), (xc, cc, pc) = evaluation_sets(cfg, data_seed, bias)
    y = c[torch.arange(len(c)), pos]
    torch.manual_seed(init_seed)
    model = _model(cfg, kind)
    opt, sched, order_gen = training_setup(model, cfg, lr, wd, init_seed)
    losses: list[float] = []
    trace: list[tuple] = []
    reasons: list[str] = []
    best_mean = math.inf
    for step in range(cfg.steps):
        idx = torch.randint(0, cfg.train_size, (cfg.batch_size,), generator=order_gen)
        loss = F.cross_entropy(model(x[idx], c[idx]), y[idx])
        value = float(loss.detach())
        if not math.isfinite(value):
            reasons.append(f"non-finite loss at step {step}")
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(value)
        if len(losses) >= 10:
            mean10 = sum(losses[-10:]) / 10
            if mean10 > 2 * best_mean + 0.5 and "loss spike" not in " ".join(reasons):
                reasons.append(f"loss spike at step {step}")
            best_mean = min(best_mean, mean10)
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            logit, ent, qn, kn = _attention_probe(model, x[idx], c[idx])
            trace.append((step, value, logit, ent, qn, kn))
    max_logit = max((t[2] for t in trace), default=math.nan)
    min_entropy = min((t[3] for t in trace), default=math.nan)
    if max_logit > MAX_LOGIT:
        reasons.append(f"max |logit| {max_logit:.3g} > {MAX_LOGIT:g}")
    if min_entropy < MIN_ENTROPY:
        reasons.append(f"entropy {min_entropy:.3g} < {MIN_ENTROPY} nats")
    with torch.no_grad():
        def acc(xs, cs, ps):
            out = model(xs, cs)
            return float((out.argmax(1) == cs[torch.arange(len(cs)), ps]).float().mean()) \
                if torch.isfinite(out).all() else 0.0
        acc_u, acc_b, acc_c = acc(xu, cu, pu), acc(xb, cb, pb), acc(xc, cc, pc)
    key_b, key_u = answer_key_norm(model, xb, cb, pb), answer_key_norm(model, xu, cu, pu)
    bayes = bayes_accuracy(cfg, xu, cu, pu)
    unstable = bool(reasons)
    return MeanRun(kind, lr, wd, init_seed, data_seed, biased_fraction, acc_u, acc_b, acc_c, bayes,
                   (acc_u >= SUCCESS_OF_BAYES * bayes) and not unstable, unstable, "; ".join(reasons), max_logit,
                   min_entropy, losses[-1] if losses else math.nan, time.perf_counter() - start, trace, key_b, key_u)


def _worker(args) -> dict:
    torch.set_num_threads(1)  # tiny tensors: one thread per run, runs side by side (intra-op threads only spin)
    cfg_dict, point = args
    return asdict(train_mean(ToyConfig(**cfg_dict), *point))


def grid_points(preset: str) -> list[tuple]:
    p = MEAN_PRESETS[preset]
    points = [(k, lr, wd, s, d, f) for k in p["kinds"] for lr in p["lrs"] for wd in p["wds"]
              for s in p["init_seeds"] for d in p["data_seeds"] for f in FRACTIONS]
    return sorted(points, key=lambda point: point[4]) if p.get("data_seed_major") else points


def run_mean_grid(preset: str, out: Path, quiet: bool = False, workers: Optional[int] = None,
                  steps: Optional[int] = None, limit: Optional[int] = None) -> list[MeanRun]:
    """Train the grid, each run single-threaded in a pool of processes; every finished run is appended to
    ``runs.jsonl`` at once, so a killed grid resumes where it stopped."""
    from ..progress import progress_bar
    if preset not in MEAN_PRESETS:
        raise QuestbenchError(f"toy preset must be one of {', '.join(MEAN_PRESETS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    p = MEAN_PRESETS[preset]
    cfg = ToyConfig(steps=steps or p["steps"], warmup_steps=p.get("warmup_steps", 0),
                    qk_from_key_part=p.get("qk_from_key_part", False),
                    split_qkv_bias=p.get("split_qkv_bias", False), query_token=p.get("query_token", False))
    log = out / "runs.jsonl"
    done: dict[tuple, MeanRun] = {}
    if log.is_file():
        for line in log.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill: that run is redone
                continue
            # a run written before a config field existed ran at that field's default
            if {**asdict(ToyConfig()), **row.get("config", {})} == asdict(cfg):
                run = MeanRun(**row["run"])
                done[run.key] = run
    points = grid_points(preset)[:limit]
    todo = [p for p in points if p not in done]
    workers = workers or max(1, min(os.cpu_count() or 1, 2 if torch.get_num_threads() <= 2 else os.cpu_count()))
    with progress_bar(quiet) as bar, open(log, "a") as sink:
        task = bar.add_task(f"toy {preset} (mean design)", total=len(points), completed=len(points) - len(todo),
                            unit="runs")
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_worker, (asdict(cfg), p)) for p in todo]
            for fut in as_completed(futures):
                row = fut.result()
                sink.write(json.dumps({"config": asdict(cfg), "run": row}) + "\n")
                sink.flush()
                run = MeanRun(**row)
                done[run.key] = run
                bar.update(task, advance=1)
    return [done[p] for p in points]


def write_mean_outputs(runs: Sequence[MeanRun], preset: str, out: Path) -> str:
    """runs.csv, traces.csv, plots and toy.md; returns the markdown."""
    from .._io import atomic_write_bytes
    out = Path(out)
    by = {r.key: r for r in runs}
    rows = []
    for r in runs:
        partner = by.get(r.key[:5] + (0.0,)) if r.biased_fraction == 0.5 else None
        harm = f"{100 * (partner.acc_unbiased - r.acc_unbiased):.4f}" if partner else ""
        rows.append({**{c: getattr(r, c) for c in MeanRun.__dataclass_fields__ if c != "trace"},
                     "shortcut_harm_pp": harm})
    atomic_write_bytes(out / "runs.csv", tidy_csv(rows).encode())
    trace_cols = ("step", "loss", "max_logit", "entropy", "q_norm", "k_norm")
    key_cols = ("attention", "lr", "wd", "init_seed", "data_seed", "biased_fraction")
    # the run keys as Python prints them ("0.0"), the traced values at 6 significant digits
    traces = [dict(zip(key_cols + trace_cols, (*map(str, r.key), *t))) for r in runs for t in r.trace]
    atomic_write_bytes(out / "traces.csv", tidy_csv(traces, key_cols + trace_cols).encode())
    _plots(runs, out)
    from .stats import load_runs, markdown, success_curves
    success_curves(load_runs(out / "runs.csv"), out / "success_curves.png")
    md = markdown(load_runs(out / "runs.csv"), preset)
    atomic_write_bytes(out / "toy.md", md.encode())
    return md


def _plots(runs: Sequence[MeanRun], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    main = [r for r in runs if r.biased_fraction == 0.5]
    success_heatmap(((r.attention, r.lr, r.wd, r.success) for r in main), out / "success_heatmap.png",
                    "success rate (biased fraction 0.5) per learning rate x weight decay")
    kinds = list(dict.fromkeys(r.attention for r in runs))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), squeeze=False)
    colors = dict(zip(kinds, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for kind in kinds:
        for n, r in enumerate(r for r in main if r.attention == kind):
            steps = [t[0] for t in r.trace]
            for ax, col in zip(axes[0], (2, 3, 5)):
                ax.plot(steps, [t[col] for t in r.trace], color=colors[kind], alpha=0.25, lw=0.8,
                        label=kind if n == 0 else None)
    for ax, title in zip(axes[0], ("max |attention logit|", "mean attention entropy (nats)", "mean key norm")):
        ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("training step")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "training_traces.png", dpi=110)
    plt.close(fig)
