"""Run a multi-seed study suite one seed at a time, each seed's models in their own results folder, so that a
machine that cannot finish the whole study in one sitting (a 2-core CPU: about 40 minutes per seed of
fmnist-ablation) finishes whole seeds and resumes the next where it stopped.

Each folder is the built-in suite with its models narrowed to one seed's (every other setting untouched, so the
folders join into one leaderboard: `questbench leaderboard OUT/s*`), and a page of some kinds is a selection of
the same results (`--models`), so no model runs twice:

    python tools/run_study_by_seed.py fmnist-ablation --seeds 0-9 --out runs/study/fmnist-ablation
    python tools/render_study.py runs/study/fmnist-ablation --to leaderboards/fmnist-ablation \\
        --subset fmnist-seeds=leaderboards/fmnist-seeds

(the same pages as `questbench leaderboard runs/study/fmnist-ablation/s*`, with and without `--models`, from one
load). A seed folder gets no pages of its own (`--no-pages`).

A seed's models are the suite's models whose names end in ``-s<seed>``. Folders are run in seed order; a finished
folder is checked by the runner and left as it is.

When the suite changed since a seed's folder was made (an endpoint's attack amended, say), that folder is moved to
``OUT/replaced/s<seed>-<its suite sha256>`` and the seed runs again with ``--reuse`` of it (and of any earlier
one there): every job of identical configuration is copied, only what changed is computed.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

from questbench.config.suite import builtin_suites_dir, load_suite
from questbench.store.results import load_provenance


def seeds_of(text: str) -> list[int]:
    a, _, b = text.partition("-")
    return list(range(int(a), int(b or a) + 1))


def seed_suite_text(suite_text: str, models: list[str]) -> str:
    """The suite's text with its ``models`` array replaced (comments and every other key kept as written)."""
    new, n = re.subn(r"^models\s*=\s*\[.*?\]", "models = [" + ", ".join(f'"{m}"' for m in models) + "]",
                     suite_text, count=1, flags=re.S | re.M)
    if n != 1:
        raise SystemExit("the suite has no models = [...] array to narrow")
    return new


def superseded(folder: Path, suite_sha256: str) -> list[Path]:
    """Move ``folder`` aside when another suite made it; the folders of this seed a changed suite replaced."""
    replaced = folder.parent / "replaced"
    prov, _ = load_provenance(folder)
    if prov is not None and prov.get("suite_sha256") not in (None, suite_sha256):
        target = replaced / f"{folder.name}-{prov['suite_sha256'][:12]}"
        if target.exists():
            raise SystemExit(f"{folder} and {target} were both made by suite {prov['suite_sha256'][:12]}: "
                             "keep one of them")
        replaced.mkdir(exist_ok=True)
        folder.rename(target)
        print(f"{folder}: made by another suite (sha256 {prov['suite_sha256'][:12]}), moved to {target}; "
              "its identical jobs are reused", flush=True)
    return sorted(replaced.glob(f"{folder.name}-*"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite", help="built-in suite name")
    ap.add_argument("--seeds", default="0-9")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default=None)
    a = ap.parse_args()
    text = (builtin_suites_dir() / f"{a.suite}.toml").read_text()
    models = load_suite(a.suite).models
    for seed in seeds_of(a.seeds):
        mine = [m for m in models if m.endswith(f"-s{seed}")]
        if not mine:
            print(f"seed {seed}: no model of {a.suite} ends in -s{seed}; skipped", flush=True)
            continue
        folder = a.out / f"s{seed}"
        spec = a.out / "suites" / f"{a.suite}-s{seed}.toml"
        spec.parent.mkdir(parents=True, exist_ok=True)
        spec.write_text(seed_suite_text(text, mine))
        t0 = time.time()
        # no page per seed folder: the study's pages join the folders (tools/render_study.py)
        cmd = [sys.executable, "-m", "questbench", "run", str(spec), "--out", str(folder), "-q", "--no-pages"]
        for old in superseded(folder, load_suite(str(spec)).sha256):
            cmd += ["--reuse", str(old)]
        if a.device:
            cmd += ["--device", a.device]
        code = subprocess.call(cmd)
        print(f"seed {seed}: {len(mine)} models, exit {code}, {time.time() - t0:.0f} s wall -> {folder}", flush=True)
        if code != 0:
            raise SystemExit(code)


if __name__ == "__main__":
    main()
