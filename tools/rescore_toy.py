"""Re-score the committed toy runs against the true Bayes ceiling (issue 39), without re-training.

The ceiling of unbiased accuracy is the Bayes rule on the answer's *class* (questbench.toy.common.
bayes_class_accuracy), not the old position rule. A run's evaluation samples are a pure function of its data seed
(questbench.toy.mean_design.evaluation_sets), so the ceiling of each run is recomputed exactly; in the mean and split
designs a run's success is unbiased accuracy >= 0.9 x that ceiling and no instability flag, so the success column
is recomputed too. Then each design's markdown, success heatmap and per-learning-rate curves are rebuilt from the
re-scored runs.csv (re-running it on runs already re-scored changes nothing in runs.csv).

    python tools/rescore_toy.py [--leaderboards leaderboards]
"""
from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

from questbench._io import atomic_write_bytes
from questbench.toy.cls_design import ToyConfig
from questbench.toy.common import success_heatmap
from questbench.toy.mean_design import SUCCESS_OF_BAYES, evaluation_bayes
from questbench.toy.stats import load_runs, markdown, success_curves

MEAN_DESIGNS = {"toy": "full", "toy-split": "split", "toy-cls": "cls"}


def rescore_mean(folder: Path, name: str, preset: str) -> None:
    path = folder / name / "runs.csv"
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    cfg = ToyConfig()
    ceiling = {seed: evaluation_bayes(cfg, seed) for seed in sorted({int(r["data_seed"]) for r in rows})}
    for r in rows:
        bayes = ceiling[int(r["data_seed"])]
        r["bayes_unbiased"] = f"{bayes:.6g}"
        stable = r["unstable"] != "True"
        r["success"] = str(float(r["acc_unbiased"]) >= SUCCESS_OF_BAYES * bayes and stable)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())
    df = load_runs(path)
    main = df[df.biased_fraction == 0.5]
    success_heatmap(((r.attention, r.lr, r.wd, str(r.success) == "True") for r in main.itertuples()),
                    folder / name / "success_heatmap.png",
                    "success rate (biased fraction 0.5) per learning rate x weight decay")
    success_curves(df, folder / name / "success_curves.png")
    atomic_write_bytes(folder / f"{name}.md", markdown(df, preset, image_prefix=f"{name}/").encode())
    print(f"{name}: ceilings {', '.join(f'seed {s}: {b:.4f}' for s, b in ceiling.items())}; "
          f"{int(main.success.astype(str).eq('True').sum())} of {len(main)} biased-fraction-0.5 runs succeed")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--leaderboards", type=Path, default=Path("leaderboards"))
    a = ap.parse_args()
    for name, preset in MEAN_DESIGNS.items():
        rescore_mean(a.leaderboards, name, preset)


if __name__ == "__main__":
    main()
