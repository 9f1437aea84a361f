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

A study outlives a session (about an hour per seed on 2 CPU cores) and a session's machine keeps nothing that git
does not: with ``--archive DIR`` each seed folder, when it finishes, is packed into ``DIR/s<seed>.tar.xz`` (its
provenance, job files and shard parts; 11.5 MB for a seed of fmnist-ablation, 88 MB unpacked), and a seed whose folder is
missing is unpacked from there first, so a study resumes from what was committed. ``--pack`` packs the folders as
they stand (finished or not: a partial seed resumes from its job files and parts) and runs nothing.
"""
from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from questbench._io import atomic_write_bytes
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


def packed_files(folder: Path) -> list[Path]:
    """What a seed folder's results are: files written whole (by rename), never a write's temporary file."""
    files = [folder / "provenance.json", *(folder / "jobs").glob("*.json"), *(folder / "shards").glob("*.json")]
    return sorted(f for f in files if f.is_file() and not f.name.startswith("."))


def snapshot(folder: Path, tries: int = 5) -> list[tuple[str, bytes]]:
    """Each packed file's name (relative to the folder's parent) and bytes, all read before any is compressed. A
    running seed merges shard parts into their job files (job file first, then the parts go): a part that is gone
    when it is read sends the round again, so the job file it became is not missed. On the last try a vanished
    part is left out (its job is recomputed on resume)."""
    for attempt in range(tries):
        taken = []
        for f in packed_files(folder):
            try:
                taken.append((f.relative_to(folder.parent).as_posix(), f.read_bytes()))
            except FileNotFoundError:
                if attempt < tries - 1:
                    break
        else:
            return taken
    return taken


def archived(archive: Path) -> list[tuple[str, bytes]] | None:
    """Each file's name and bytes as ``archive`` holds them (in its order); None when there is no archive."""
    if not archive.is_file():
        return None
    with tarfile.open(archive, mode="r:xz") as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]


def pack(folder: Path, archive: Path) -> int:
    """Pack ``folder`` into ``archive`` (xz tar, names relative to the folder's parent); the same files give the
    same bytes (sorted, no times or owners), so re-packing an unchanged seed changes nothing in git. An archive
    that already holds exactly these files is left alone: reading it back takes seconds, compressing minutes."""
    files = snapshot(folder)
    if archived(archive) == files:
        return len(files)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz", preset=9) as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    if not archive.is_file() or archive.read_bytes() != buf.getvalue():
        atomic_write_bytes(archive, buf.getvalue())
    return len(files)


def unpack(archive: Path, out: Path, folder: Path) -> None:
    """Restore ``folder`` from ``archive``; only regular files under the folder's own name are accepted."""
    with tarfile.open(archive, mode="r:xz") as tar:
        members = tar.getmembers()
        stray = [m.name for m in members if not m.isfile() or Path(m.name).parts[0] != folder.name]
        if stray:
            raise SystemExit(f"{archive}: holds {stray[0]!r}, not a file of {folder.name}/: not unpacked")
        tar.extractall(out, members=members, filter="data")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite", help="built-in suite name")
    ap.add_argument("--seeds", default="0-9")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default=None)
    ap.add_argument("--archive", type=Path, default=None,
                    help="pack each finished seed folder into ARCHIVE/s<seed>.tar.xz; unpack a missing one from it")
    ap.add_argument("--pack", action="store_true",
                    help="with --archive: pack the seed folders as they stand (finished or not) and run nothing")
    a = ap.parse_args()
    if a.pack and a.archive is None:
        raise SystemExit("--pack needs --archive DIR")
    text = (builtin_suites_dir() / f"{a.suite}.toml").read_text()
    models = load_suite(a.suite).models
    for seed in seeds_of(a.seeds):
        mine = [m for m in models if m.endswith(f"-s{seed}")]
        if not mine:
            print(f"seed {seed}: no model of {a.suite} ends in -s{seed}; skipped", flush=True)
            continue
        folder = a.out / f"s{seed}"
        packed = a.archive / f"{folder.name}.tar.xz" if a.archive else None
        if a.pack:
            if folder.is_dir():
                print(f"{folder}: {pack(folder, packed)} files -> {packed}", flush=True)
            continue
        if packed is not None and packed.is_file() and not folder.exists():
            unpack(packed, a.out, folder)
            print(f"{folder}: unpacked from {packed}", flush=True)
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
        if packed is not None:
            print(f"{folder}: {pack(folder, packed)} files -> {packed}", flush=True)


if __name__ == "__main__":
    main()
