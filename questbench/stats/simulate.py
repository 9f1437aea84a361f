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
