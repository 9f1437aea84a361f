"""The QUEST paper's toy example: retrieval with a spurious shortcut, and whether attention learns the robust cue.

Choices (the paper's exact sizes, grid and criterion were not published in what we could read; these are
ours and stay fixed):

- A sequence has T = 16 tokens. Token j has a key part x_j in R^8 and a value c_j in {0..7} (one-hot).
  Distractors: x_j ~ N(0, I). One answer token at a random position: x ~ N(0, Sigma), Sigma = diag(16, 16, 1,
  ..., 1) -- large variance in two directions, a cue valid in every sample.
- In half of the training samples (the biased ones) the answer token is instead drawn from N(b, 0.1 I) with
  one bias vector b (|b| = 4) shared by all biased samples: a linear shortcut.
- Target: the answer token's value c. Held-out evaluation uses fresh unbiased samples (answer ~ N(0, Sigma))
  and fresh biased ones.
- Model: a token MLP embeds [x_j, onehot(c_j)] to width 32, a learned query token is prepended, one
  questbench attention layer (the same modules the ViTs use; 1 head of 32) mixes, and a linear head reads the
  query token's output. Only the attention kind changes between runs.
- Training: AdamW, 1,500 steps of 128 samples from a fixed training set of 4,096 (seeded by the data seed),
  cosine schedule, init seed separate from data seed.
- Success (the robust solution): held-out unbiased accuracy >= 0.80.
"""
from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.attention import attention_class
from .common import PAPER_RATES, bayes_class_accuracy, success_heatmap, tidy_csv

TOY_KINDS = ("standard", "qnorm", "qknorm_hs", "quest")
SUCCESS_THRESHOLD = 0.80


@dataclass(frozen=True)
class ToyConfig:
    tokens: int = 16
    key_dim: int = 8
    values: int = 8
    width: int = 32
    signal_var: float = 16.0
    signal_dims: int = 2
    bias_norm: float = 4.0
    bias_var: float = 0.1
    biased_fraction: float = 0.5
    train_size: int = 4096
    eval_size: int = 2048
    steps: int = 1500
    batch_size: int = 128
    log_every: int = 50
    warmup_steps: int = 0  # linear warmup before the cosine decay (0: cosine from the first step)
    qk_from_key_part: bool = False  # split design: q, k from each token's key part (no bias), v from its value
    split_qkv_bias: bool = False  # split design with a learned bias on q, k and v (the weights stay split)


PRESETS = {
    "quick": dict(lrs=(1e-3, 1e-2), wds=(0.0, 0.1), init_seeds=(0, 1), data_seeds=(0,), steps=600),
    "full": dict(lrs=(1e-3, 3e-3, 1e-2), wds=(0.0, 0.1), init_seeds=(0, 1, 2), data_seeds=(0, 1), steps=1500),
}


def make_data(cfg: ToyConfig, n: int, biased_fraction: float, gen: torch.Generator, bias: torch.Tensor):
    """Returns keys (n, T, d), values (n, T), answer positions (n,), biased flags (n,)."""
    x = torch.randn(n, cfg.tokens, cfg.key_dim, generator=gen)
    c = torch.randint(0, cfg.values, (n, cfg.tokens), generator=gen)
    pos = torch.randint(0, cfg.tokens, (n,), generator=gen)
    scale = torch.ones(cfg.key_dim)
    scale[: cfg.signal_dims] = math.sqrt(cfg.signal_var)
    answer = torch.randn(n, cfg.key_dim, generator=gen) * scale
    biased = torch.rand(n, generator=gen) < biased_fraction
    shortcut = bias + math.sqrt(cfg.bias_var) * torch.randn(n, cfg.key_dim, generator=gen)
    answer = torch.where(biased.view(-1, 1), shortcut, answer)
    x[torch.arange(n), pos] = answer
    return x, c, pos, biased


def shortcut_bias(cfg: ToyConfig, data_seed: int) -> tuple[torch.Generator, torch.Tensor]:
    """The data seed's generator and the shortcut's bias vector b (|b| = bias_norm) drawn first from it."""
    gen = torch.Generator().manual_seed(10_000 + data_seed)
    bias = torch.randn(cfg.key_dim, generator=gen)
    return gen, bias / bias.norm() * cfg.bias_norm


def training_setup(model: nn.Module, cfg: ToyConfig, lr: float, wd: float, init_seed: int):
    """AdamW with a cosine schedule over the run, and the generator of the batch order (seeded by the init seed)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    if cfg.warmup_steps:
        w, total = cfg.warmup_steps, cfg.steps

        def factor(step: int) -> float:
            if step < w:
                return (step + 1) / w
            return 0.5 * (1 + math.cos(math.pi * (step - w) / max(1, total - w)))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    else:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    return opt, sched, torch.Generator().manual_seed(20_000 + init_seed)


class ToyRetriever(nn.Module):
    def __init__(self, cfg: ToyConfig, kind: str):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(cfg.key_dim + cfg.values, cfg.width), nn.GELU(),
                                   nn.Linear(cfg.width, cfg.width))
        self.query = nn.Parameter(torch.randn(1, 1, cfg.width) * 0.02)
        self.attn = attention_class(kind)(cfg.width, num_heads=1, qkv_bias=True)
        self.head = nn.Linear(cfg.width, cfg.values)
        self.values = cfg.values

    def tokens(self, x, c):
        e = self.embed(torch.cat([x, F.one_hot(c, self.values).float()], -1))
        return torch.cat([self.query.expand(len(x), -1, -1), e], 1)

    def forward(self, x, c):
        return self.head(self.attn(self.tokens(x, c))[:, 0])

    @torch.no_grad()
    def key_norms(self, x, c, pos):
        """Norm of the answer tokens' keys (before any normalization the kind applies)."""
        t = self.tokens(x, c)
        k = F.linear(t, self.attn.qkv.weight, self.attn.qkv.bias)[..., t.shape[-1]: 2 * t.shape[-1]]
        return k[torch.arange(len(x)), pos + 1].norm(dim=-1)


@dataclass
class ToyRun:
    attention: str
    lr: float
    wd: float
    init_seed: int
    data_seed: int
    success: bool
    acc_unbiased: float
    acc_biased: float
    key_norm_biased: float
    key_norm_unbiased: float
    wall_s: float


def train_one(cfg: ToyConfig, kind: str, lr: float, wd: float, init_seed: int, data_seed: int
              ) -> tuple[ToyRun, list[tuple[int, float]]]:
    start = time.perf_counter()
    gen, bias = shortcut_bias(cfg, data_seed)
    x, c, pos, biased = make_data(cfg, cfg.train_size, cfg.biased_fraction, gen, bias)
    xu, cu, pu, _ = make_data(cfg, cfg.eval_size, 0.0, gen, bias)
    xb, cb, pb, _ = make_data(cfg, cfg.eval_size, 1.0, gen, bias)
    y = c[torch.arange(len(c)), pos]
    torch.manual_seed(init_seed)
    model = ToyRetriever(cfg, kind)
    opt, sched, order_gen = training_setup(model, cfg, lr, wd, init_seed)
    curve: list[tuple[int, float]] = []
    for step in range(cfg.steps):
        idx = torch.randint(0, cfg.train_size, (cfg.batch_size,), generator=order_gen)
        loss = F.cross_entropy(model(x[idx], c[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            curve.append((step, float(model.key_norms(xb[:256], cb[:256], pb[:256]).mean())))
    with torch.no_grad():
        acc_u = float((model(xu, cu).argmax(1) == cu[torch.arange(len(cu)), pu]).float().mean())
        acc_b = float((model(xb, cb).argmax(1) == cb[torch.arange(len(cb)), pb]).float().mean())
        kb = float(model.key_norms(xb, cb, pb).mean())
        ku = float(model.key_norms(xu, cu, pu).mean())
    run = ToyRun(kind, lr, wd, init_seed, data_seed, acc_u >= SUCCESS_THRESHOLD, acc_u, acc_b, kb, ku,
                 time.perf_counter() - start)
    return run, curve


def grid(preset: str, kinds: Sequence[str] = TOY_KINDS) -> Iterator[tuple[str, float, float, int, int]]:
    p = PRESETS[preset]
    return itertools.product(kinds, p["lrs"], p["wds"], p["init_seeds"], p["data_seeds"])


def run_grid(preset: str, out: Path, kinds: Sequence[str] = TOY_KINDS, quiet: bool = False,
             limit: Optional[int] = None, steps: Optional[int] = None) -> list[ToyRun]:
    from .._io import atomic_write_bytes
    from ..progress import progress_bar

    cfg = ToyConfig(steps=steps or PRESETS[preset]["steps"])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    points = list(grid(preset, kinds))[:limit]
    runs, curves = [], []
    with progress_bar(quiet) as bar:
        task = bar.add_task(f"toy {preset}", total=len(points))
        for kind, lr, wd, init_seed, data_seed in points:
            run, curve = train_one(cfg, kind, lr, wd, init_seed, data_seed)
            runs.append(run)
            curves += [{"attention": kind, "lr": lr, "wd": wd, "init_seed": init_seed, "data_seed": data_seed,
                        "step": s, "key_norm_biased": v} for s, v in curve]
            bar.update(task, advance=1)
    atomic_write_bytes(out / "runs.csv", tidy_csv([asdict(r) for r in runs]).encode())
    atomic_write_bytes(out / "key_norms.csv", tidy_csv(curves).encode())
    atomic_write_bytes(out / "config.json", json.dumps(
        {"preset": preset, "grid": {k: list(v) if isinstance(v, tuple) else v for k, v in PRESETS[preset].items()},
         "toy": asdict(cfg), "success_threshold": SUCCESS_THRESHOLD}, indent=2).encode())
    write_plots(runs, curves, out)
    return runs


def success_rates(runs: Sequence[ToyRun]) -> dict[str, float]:
    rates = {}
    for kind in dict.fromkeys(r.attention for r in runs):
        rs = [r for r in runs if r.attention == kind]
        rates[kind] = sum(r.success for r in rs) / len(rs)
    return rates


def write_plots(runs: Sequence[ToyRun], curves: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    success_heatmap(((r.attention, r.lr, r.wd, r.success) for r in runs), out / "success_heatmap.png",
                    "success rate per learning rate x weight decay")
    kinds = list(dict.fromkeys(r.attention for r in runs))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    colors = dict(zip(kinds, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for kind in kinds:
        seen = False
        for key in dict.fromkeys((c["lr"], c["wd"], c["init_seed"], c["data_seed"]) for c in curves
                                 if c["attention"] == kind):
            pts = [(c["step"], c["key_norm_biased"]) for c in curves if c["attention"] == kind and
                   (c["lr"], c["wd"], c["init_seed"], c["data_seed"]) == key]
            ax.plot(*zip(*pts), color=colors[kind], alpha=0.35, lw=1, label=None if seen else kind)
            seen = True
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("key norm of biased answer tokens")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "key_norms.png", dpi=110)
    plt.close(fig)


def bayes_unbiased_accuracy(cfg: ToyConfig = ToyConfig(), n: int = 200_000, seed: int = 0) -> float:
    """Accuracy of the Bayes rule (the answer's class with the largest posterior) on fresh unbiased samples. No
    model can beat this on average."""
    gen = torch.Generator().manual_seed(seed)
    x, c, pos, _ = make_data(cfg, n, 0.0, gen, torch.zeros(cfg.key_dim))
    return bayes_class_accuracy(x, c, pos, cfg.signal_dims, cfg.signal_var, cfg.values)


def toy_markdown(runs: Sequence[ToyRun], preset: str, image_prefix: str = "") -> str:
    """The replication table: our success rates beside the paper's reported ones."""
    rates = success_rates(runs)
    lines = [f"# QUEST toy example: spurious-shortcut retrieval ({preset} grid, {len(runs)} runs)", "",
             f"Success = held-out unbiased accuracy >= {SUCCESS_THRESHOLD:.2f}. Setup, grid and criterion: "
             "`questbench/toy/cls_design.py` and the README. The paper's numbers come from a secondary summary and its "
             "sizes, grid and criterion differ from ours, so compare directions, not digits.", "",
             f"Bayes ceiling of unbiased accuracy for this setup (the answer's class with the largest posterior, "
             f"summed over the tokens that carry each class; 200,000 samples): {bayes_unbiased_accuracy():.3f}.", "",
             "| attention | runs | success rate (ours) | reported (paper) | mean unbiased acc | mean biased acc | "
             "mean key norm, biased answers |", "|---|---|---|---|---|---|---|"]
    for kind, rate in rates.items():
        rs = [r for r in runs if r.attention == kind]
        lines.append(f"| {kind} | {len(rs)} | {100 * rate:.0f}% | {PAPER_RATES.get(kind, '-')} | "
                     f"{np.mean([r.acc_unbiased for r in rs]):.3f} | {np.mean([r.acc_biased for r in rs]):.3f} | "
                     f"{np.mean([r.key_norm_biased for r in rs]):.2f} |")
    lines += ["", f"![success rate per learning rate and weight decay]({image_prefix}success_heatmap.png)", "",
              f"![key norms of biased answer tokens during training]({image_prefix}key_norms.png)", ""]
    return "\n".join(lines)
