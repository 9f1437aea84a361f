"""Simulated multi-seed studies with a known answer, for checking the coverage and size of seed-level statistics.

A study is k trained pairs (baseline, other) evaluated on the same n images. Image i has a baseline probability
of being right p_i and an image-specific effect of the other attention e_i, both shared by every pair (some
images are hard for every seed, some gain more than others); pair j has its own effect t_j ~ N(mu, tau), the
seed-to-seed variation. Both models of a pair read the same uniform draw U_ij, so their outcomes agree on most
images, as two trained models do: baseline right iff U_ij < p_i, other right iff U_ij < p_i + t_j + e_i. The
expected delta over pairs and images is mu exactly (no probability leaves [0, 1] at the defaults).
"""
from __future__ import annotations

import numpy as np


def pair_study(rng: np.random.Generator, k: int, n: int, mu: float, tau: float = 0.015,
               image_effect: float = 0.05) -> np.ndarray:
    """(k, n) per-image deltas in pp (-100, 0 or +100): other minus baseline, one row per trained pair."""
    p = rng.uniform(0.3, 0.7, n)
    e = rng.uniform(-image_effect, image_effect, n)
    t = rng.normal(mu, tau, k)
    u = rng.uniform(size=(k, n))
    return 100 * ((u < p + t[:, None] + e).astype(float) - (u < p))


# Discordance of two trained models of one seed on a single setting, measured from the committed fmnist-ablation
# paired tables (15 pairs, from each row's paired-bootstrap interval: (b + c) / n = (n * halfwidth / 1.96)^2 / n):
# clean 4.3%, FGSM/PGD at 1/255 5.5%, 4/255 10.4%, 8/255 13.5% (bench/discordance_rates.py recomputes them).
DISCORDANCE = {"clean": 0.043, "attack 4/255": 0.104, "attack 8/255": 0.135}


def discordant_pair_study(rng: np.random.Generator, k: int, n: int, mu: float, discordance: float,
                          tau: float = 0.002, image_effect: float = 1.0) -> np.ndarray:
    """(k, n) per-image deltas in pp (-100, 0 or +100) with outcomes that disagree both ways.

    For pair j and image i the two models disagree with probability ``discordance`` (D); among disagreements the
    other model is the right one with probability (1 + delta_ij / D) / 2, where delta_ij = t_j + e_i: t_j ~
    N(mu, tau) is the pair's effect, e_i ~ Uniform(-a, a) with a = ``image_effect`` * (D - |mu| - 3 tau) is the
    image's own effect, shared by every pair (some images favour one kind whatever the seed). So
    P(other right, baseline wrong) - P(other wrong, baseline right) = delta_ij, and the population delta is mu.
    With ``image_effect`` near 1 the shared image term is a large part of the variance of the mean at 10-20
    pairs: an interval over pairs alone then covers too little."""
    a = image_effect * max(0.0, discordance - abs(mu) - 3 * tau)
    e = rng.uniform(-a, a, n)
    t = rng.normal(mu, tau, k)
    delta = np.clip(t[:, None] + e[None, :], -discordance, discordance)
    u = rng.uniform(size=(k, n))
    up = u < (discordance + delta) / 2  # other right, baseline wrong
    down = (u >= (discordance + delta) / 2) & (u < discordance)  # other wrong, baseline right
    return 100 * (up.astype(float) - down)
