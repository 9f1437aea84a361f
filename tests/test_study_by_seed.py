"""tools/run_study_by_seed.py: a study run seed by seed gives folders that join into the study's one leaderboard,
so each narrowed suite must differ from the built-in one in its models only."""
import importlib.util
from pathlib import Path

import pytest

from questbench.config.suite import builtin_suites_dir, load_suite, parse_suite
from questbench.store.combine import _what_rows_mean

spec = importlib.util.spec_from_file_location("run_study_by_seed",
                                              Path(__file__).parents[1] / "tools" / "run_study_by_seed.py")
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)


@pytest.mark.parametrize("name", ["fmnist-ablation", "fmnist-seeds"])
def test_a_seeds_suite_differs_from_the_study_in_its_models_only(name):
    full = load_suite(name)
    text = (builtin_suites_dir() / f"{name}.toml").read_text()
    mine = [m for m in full.models if m.endswith("-s3")]
    narrowed = parse_suite(tool.seed_suite_text(text, mine), f"{name}-s3.toml")
    assert narrowed.models == mine and len(mine) == (4 if name == "fmnist-ablation" else 2)
    a, b = full.as_dict(), narrowed.as_dict()
    # what decides a row's meaning is equal, so the seed folders join (store/combine.py)
    assert _what_rows_mean({"suite": a}) == _what_rows_mean({"suite": b})
    assert {k for k in a if a[k] != b[k]} <= {"models", "path", "sha256"}


def test_seed_ranges():
    assert tool.seeds_of("0-9") == list(range(10)) and tool.seeds_of("4") == [4]


def test_a_study_page_made_before_all_its_models_finished_says_it_is_interim():
    spec = importlib.util.spec_from_file_location("render_study",
                                                  Path(__file__).parents[1] / "tools" / "render_study.py")
    render_study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render_study)
    planned = [f"vit-{k}-s{s}" for s in range(10) for k in ("standard", "quest")]
    present = planned[:14] + ["vit-other-s3"]  # a model outside the plan does not count
    note = render_study.interim_note(present, planned, "study")
    assert note.startswith("Interim: 14 of the 20 models suite study names have finished (the models of 7 of its "
                           "10 seeds)."), note
    assert render_study.interim_note(planned, planned, "study") is None
    assert render_study.interim_note(present, [], "study") is None


def test_render_study_reads_finished_seed_folders_only(tmp_path):
    """tools/render_study.py leaves out a seed folder that still misses a planned job."""
    import json
    spec = importlib.util.spec_from_file_location("render_study",
                                                  Path(__file__).parents[1] / "tools" / "render_study.py")
    render_study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render_study)
    folder = tmp_path / "s0"
    (folder / "jobs").mkdir(parents=True)
    (folder / "provenance.json").write_text(json.dumps({"jobs": {"m__clean": "k1", "m__attack__pgd": "k2"}}))
    (folder / "jobs" / "m__clean.json").write_text("{}")
    assert not render_study.finished(folder)
    (folder / "jobs" / "m__attack__pgd.json").write_text("{}")
    assert render_study.finished(folder)
    (folder / "provenance.json").write_text(json.dumps({"jobs": {}}))
    assert not render_study.finished(folder)
    for name in ("s10", "s2", "replaced/s2-abc", "suites", "s3x"):
        (tmp_path / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / name / "provenance.json").write_text("{}")
    assert render_study.seed_folders(tmp_path) == [tmp_path / "s0", tmp_path / "s2", tmp_path / "s10"]


def test_a_seed_folder_made_by_another_suite_is_moved_aside_and_reused(tmp_path):
    """A changed suite (an endpoint's attack amended) moves the seed's folder to replaced/ and names it, and any
    earlier one there, for --reuse; a folder of this suite, or without provenance, stays where it is."""
    import json
    from questbench.store.results import _provenance_digest

    def made_by(folder, sha):
        (folder / "jobs").mkdir(parents=True)
        doc = {"format": 3, "suite_sha256": sha}
        (folder / "provenance.json").write_text(json.dumps({**doc, "sha256": _provenance_digest(doc)}))

    s3 = tmp_path / "s3"
    made_by(s3, "a" * 64)
    assert tool.superseded(s3, "a" * 64) == [] and s3.is_dir()
    assert tool.superseded(s3, "b" * 64) == [tmp_path / "replaced" / f"s3-{'a' * 12}"] and not s3.exists()
    made_by(s3, "b" * 64)  # the new suite's run, interrupted: resumed in place, still reusing the old folder
    assert tool.superseded(s3, "b" * 64) == [tmp_path / "replaced" / f"s3-{'a' * 12}"] and s3.is_dir()
    assert tool.superseded(tmp_path / "s4", "b" * 64) == []  # not made yet


def test_a_seed_folder_packs_and_unpacks_byte_for_byte(tmp_path):
    """--archive: a seed folder survives a machine that keeps only git. The archive restores every finished file
    (job files, shard parts, provenance) and nothing half-written; packing the same files again gives the same
    bytes; an archive holding anything outside its seed's folder is refused."""
    import tarfile
    out = tmp_path / "study"
    folder = out / "s7"
    files = {"provenance.json": b'{"jobs": {}}', "jobs/m__clean.json": b'{"records": [1]}',
             "shards/m__attack.0-250.json": b'{"part": {}}'}
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    (folder / "jobs" / ".m__pgd.json.x1.tmp").write_bytes(b"half")  # a write in progress
    archive = tmp_path / "archive" / "s7.tar.xz"
    assert tool.pack(folder, archive) == 3
    first = archive.read_bytes()
    assert tool.pack(folder, archive) == 3 and archive.read_bytes() == first
    restored = tmp_path / "elsewhere"
    tool.unpack(archive, restored, restored / "s7")
    got = {p.relative_to(restored / "s7").as_posix(): p.read_bytes()
           for p in (restored / "s7").rglob("*") if p.is_file()}
    assert got == files
    with tarfile.open(tmp_path / "bad.tar.xz", "w:xz") as tar:
        tar.add(folder / "provenance.json", arcname="s8/provenance.json")
    with pytest.raises(SystemExit, match="not a file of s7/"):
        tool.unpack(tmp_path / "bad.tar.xz", restored, restored / "s7")


def test_a_part_merged_while_packing_is_packed_as_its_job_file(tmp_path, monkeypatch):
    """A running seed merges a shard part into its job file (the job file is written, then the part removed)
    between the listing and the read: the snapshot is read again and holds the job file, so its work is kept."""
    folder = tmp_path / "s3"
    (folder / "jobs").mkdir(parents=True)
    (folder / "shards").mkdir()
    (folder / "provenance.json").write_bytes(b"{}")
    part = folder / "shards" / "m__attack.0-250.json"
    part.write_bytes(b'{"part": {}}')
    real = Path.read_bytes

    def merging(self):
        if self == part and part.exists():  # the merge lands just before this read
            (folder / "jobs" / "m__attack.json").write_bytes(b'{"records": [1, 2]}')
            part.unlink()
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", merging)
    assert [name for name, _ in tool.snapshot(folder)] == ["s3/jobs/m__attack.json", "s3/provenance.json"]


def test_an_archive_that_holds_the_folder_already_is_not_compressed_again(tmp_path, monkeypatch):
    """A resumed study re-checks its finished seeds: an archive whose files equal the folder's is kept without
    compressing (minutes per seed), and a folder that gained a file is packed anew."""
    folder = tmp_path / "s1"
    (folder / "jobs").mkdir(parents=True)
    (folder / "provenance.json").write_bytes(b"{}")
    (folder / "jobs" / "m__clean.json").write_bytes(b'{"records": [1]}')
    archive = tmp_path / "s1.tar.xz"
    assert tool.pack(folder, archive) == 2
    compressed = []
    real_open = tool.tarfile.open
    monkeypatch.setattr(tool.tarfile, "open", lambda *a, **k: (compressed.append(k.get("mode")), real_open(*a, **k))[1])
    assert tool.pack(folder, archive) == 2 and "w:xz" not in compressed
    (folder / "jobs" / "m__pgd.json").write_bytes(b'{"records": [0]}')
    assert tool.pack(folder, archive) == 3 and "w:xz" in compressed
    assert [name for name, _ in tool.archived(archive)] == ["s1/jobs/m__clean.json", "s1/jobs/m__pgd.json",
                                                            "s1/provenance.json"]
