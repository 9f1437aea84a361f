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

This module holds what every design uses (the config, the data generator, the shortcut, the training set-up) and
this design's model; the grid, the fraction-0 control, the metrics and the statistics are the mean design's
runner's (``questbench toy --design cls``: questbench/toy/mean_design.py, preset "cls").
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.attention import attention_class
from .common import bayes_class_accuracy

TOY_KINDS = ("standard", "qnorm", "qknorm_hs", "quest")


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
    query_token: bool = False  # the cls design's model (ToyRetriever) trained by the mean design's runner


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
    answer_offset = 1  # token j of the sample is token j + 1 of the attention layer (the query token is first)

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


def bayes_unbiased_accuracy(cfg: ToyConfig = ToyConfig(), n: int = 200_000, seed: int = 0) -> float:
    """Accuracy of the Bayes rule (the answer's class with the largest posterior) on fresh unbiased samples. No
    model can beat this on average."""
    gen = torch.Generator().manual_seed(seed)
    x, c, pos, _ = make_data(cfg, n, 0.0, gen, torch.zeros(cfg.key_dim))
    return bayes_class_accuracy(x, c, pos, cfg.signal_dims, cfg.signal_var, cfg.values)
