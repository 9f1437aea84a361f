"""How often two trained models of one seed disagree on an image, per setting, read off a committed leaderboard's
paired tables: the rates questbench.stats.simulate.DISCORDANCE uses so that the coverage simulation of the
seed-level interval sees outcomes that flip both ways as often as real pairs do.

A single-setting row's 95% interval is a paired bootstrap over images, so its half-width is about 1.96 x
sqrt(b + c) / n, with b + c the discordant images; (b + c) / n = (n x half-width / 1.96)^2 / n.

    python bench/discordance_rates.py [leaderboards/fmnist-ablation.md]
"""
from __future__ import annotations

import sys
from collections import defaultdict

import numpy as np


def rates(markdown: str) -> dict[tuple[str, str], list[float]]:
    out: dict[tuple[str, str], list[float]] = defaultdict(list)
    for section in markdown.split("\n## ")[1:]:
        if not section.startswith("Paired:"):
            continue
        for line in section.splitlines():
            cells = [c.strip() for c in line.strip("|").split("|")]
            if len(cells) != 9 or cells[1] in ("all", "all-relative", "setting") or " to " not in cells[5]:
                continue
            lo, hi = (float(v) for v in cells[5].split(" to "))
            n = int(cells[8].rstrip("*"))
            half = (hi - lo) / 2 / 100
            family = "clean" if cells[0] == "clean" else cells[0].split()[0]
            out[(family, cells[1])].append((n * half / 1.96) ** 2 / n)
    return out


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else "leaderboards/fmnist-ablation.md"
    print(f"# discordant fraction per setting, from the paired tables of {path}")
    print("evaluation | setting | pairs | discordant (%)")
    for (family, setting), values in sorted(rates(open(path).read()).items()):
        print(f"{family} | {setting} | {len(values)} | {100 * np.mean(values):.1f}")


if __name__ == "__main__":
    main()
