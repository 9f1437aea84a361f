"""Every input a user can get wrong: one `error:` line, exit 2, no traceback, nothing half-written.

Most cases call the CLI's entry point in-process (the same code path as the `questbench` script, without
paying torch's import for each); a few run the real script to check the end-to-end behaviour.
"""
import json
import subprocess
import sys

import pytest

import questbench
from questbench.cli import main
from questbench.errors import QuestbenchError

GOOD = 'models = ["fmnist-vit-standard-s0"]\n'

SUITE_CASES = {
    "binary file": b"\xff\xfe\x00\x01garbage",
    "invalid toml": "models = [",
    "unknown top key": GOOD + "bogus = 1",
    "severities a number": GOOD + "[corruptions]\nseverities = 3",
    "severities floats": GOOD + "[corruptions]\nseverities = [1.0]",
    "severity 6": GOOD + "[corruptions]\nseverities = [6]",
    "severity twice": GOOD + "[corruptions]\nseverities = [2, 2]",
    "seed a string": GOOD + 'seed = "abc"',
    "seed negative": GOOD + "seed = -1",
    "steps a string": GOOD + '[[attacks]]\nattack = "pgd"\neps = 0.1\nsteps = "abc"',
    "step ratio a string": GOOD + '[[attacks]]\nattack = "pgd"\neps = 0.1\nstep_size_ratio = "abc"',
    "device a number": GOOD + "device = 5",
    "device unknown": GOOD + 'device = "banana"',
    "num_workers a word": GOOD + 'num_workers = "two"',
    "num_workers negative": GOOD + "num_workers = -1",
    "clean a word": GOOD + 'clean = "no"',
    "random_start a word": GOOD + '[[attacks]]\nattack = "pgd"\neps = 0.1\nrandom_start = "no"',
    "eps above 1": GOOD + '[[attacks]]\nattack = "pgd"\neps = 2.0',
    "eps negative": GOOD + '[[attacks]]\nattack = "fgsm"\neps = -0.1',
    "eps division by zero": GOOD + '[[attacks]]\nattack = "pgd"\neps = "1/zero"',
    "eps empty list": GOOD + '[[attacks]]\nattack = "pgd"\neps = []',
    "eps missing": GOOD + '[[attacks]]\nattack = "pgd"',
    "eps twice": GOOD + '[[attacks]]\nattack = "pgd"\neps = ["1/255", "1/255"]',
    "unknown attack": GOOD + '[[attacks]]\nattack = "cw"\neps = 0.1',
    "steps on fgsm": GOOD + '[[attacks]]\nattack = "fgsm"\neps = 0.1\nsteps = 3',
    "two step sizes": GOOD + '[[attacks]]\nattack = "pgd"\neps = 0.1\nstep_size = 0.01\nstep_size_ratio = 0.2',
    "unknown corruption": GOOD + '[corruptions]\nnames = ["rain"]',
    "corruption names a number": GOOD + "[corruptions]\nnames = 5",
    "released mode without root": GOOD + '[corruptions]\nmode = "imagenet-c"',
    "unknown mode": GOOD + '[corruptions]\nmode = "sideways"',
    "name escapes runs/": GOOD + 'name = "../../x"',
    "models empty": "models = []",
    "models missing": 'name = "x"',
    "models a string": 'models = "fmnist-vit-standard-s0"',
    "model twice": 'models = ["a", "a"]',
    "batch_size zero": GOOD + "batch_size = 0",
    "precision unknown": GOOD + 'precision = "fp16"',
    "data samples zero": GOOD + "[data]\nsamples = 0",
    "data unknown key": GOOD + "[data]\nsubset = 3",
    "classes on fashion-mnist": GOOD + '[data]\nclasses = "wnids.txt"',
    "diagnostics samples a word": GOOD + '[diagnostics]\nsamples = "x"',
    "unknown model": 'models = ["no-such-model"]\n[data]\nsamples = 4',
    "unknown dataset": GOOD + '[data]\ndataset = "mnist-7"',
    "image folder missing": GOOD + '[data]\ndataset = "imagenet"\nroot = "no/such/folder"',
    "eps overflows": GOOD + '[[attacks]]\nattack = "pgd"\neps = "1e999"',
    "step size overflows": GOOD + '[[attacks]]\nattack = "pgd"\neps = 0.1\nstep_size = "1e999"',
    "attack samples above data.samples": GOOD + '[data]\nsamples = 10\n[[attacks]]\nattack = "fgsm"\neps = 0.1\n'
                                         'samples = 20',
    "corruption samples above data.samples": GOOD + '[data]\nsamples = 10\n[corruptions]\nsamples = 20',
    "pgd loss unknown": GOOD + '[[attacks]]\nattack = "pgd"\neps = 0.1\nloss = "cw"',
    "dlr with L2": GOOD + '[[attacks]]\nattack = "pgd"\nnorm = "L2"\neps = 0.1\nloss = "dlr"',
    "patch layers with ce": GOOD + '[[attacks]]\nattack = "patch"\npatches = 1\nlayers = [0]',
}


def cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def assert_one_line_error(code, err, *, contains=""):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert contains in lines[0]


@pytest.mark.parametrize("case", sorted(SUITE_CASES))
def test_bad_suite_is_one_line(case, tmp_path, capsys):
    text = SUITE_CASES[case]
    suite = tmp_path / "s.toml"
    suite.write_bytes(text if isinstance(text, bytes) else text.encode())
    out = tmp_path / "out"
    code, _, err = cli(["run", suite, "--out", out, "--quiet", "--device", "cpu"], capsys)
    assert_one_line_error(code, err)
    assert not (out / "jobs").exists() and not (out / "provenance.json").exists()


def test_suite_errors_name_the_key_and_the_type(tmp_path, capsys):
    for text, expected in ((GOOD + 'seed = "abc"', "seed: Input should be a valid integer (got 'abc')"),
                           (GOOD + "[corruptions]\nseverities = [1.0]", "corruptions.severities.0"),
                           (GOOD + "bogus = 1", "bogus: unknown key"),
                           (GOOD + '[[attacks]]\nattack = "pgd"\neps = 2.0', "outside [0, 1]"),
                           (GOOD + "[corruptions]\nnames = []", "corruptions.names: List should have at least 1"),
                           (GOOD + '[[attacks]]\nattack = "patch"\npatches = [-1, 1]', "attacks.0.patches.0"),
                           (GOOD + '[shifts.imagenet-a]\nroot = "x"\nbogus = 1', "shifts.imagenet-a.bogus: unknown"),
                           ('models = ["' + "a" * 3000 + '"]', "File name too long"),
                           (GOOD + 'name = "' + "n" * 300 + '"', "name: String should match")):
        (tmp_path / "s.toml").write_text(text)
        code, _, err = cli(["run", tmp_path / "s.toml", "--quiet"], capsys)
        assert_one_line_error(code, err, contains=expected)


@pytest.mark.parametrize("args, contains", [
    (["run", "--limit", "0"], "--limit must be a positive integer"),
    (["run", "--limit", "-5"], "--limit must be a positive integer"),
    (["run", "--limit", "abc"], "--limit"),
    (["run", "no-such-suite"], "no built-in suite"),
    (["run", "--ranks", "999"], "more than this machine's"),
    (["run", "--bogus"], "No such option"),
    (["frobnicate"], "No such command"),
    (["leaderboard", "--format", "pdf", "."], "'pdf' is not one of 'md', 'rich', 'csv', 'html'"),
    (["export", ".", "--format", "onnx", "--out", "x"], "'onnx' is not one of 'robustbench'"),
    (["toy", "--design", "grid"], "'grid' is not one of 'mean', 'split', 'split-bias', 'cls'"),
    (["leaderboard"], "Missing argument"),
])
def test_bad_arguments_are_one_line(args, contains, capsys):
    code, _, err = cli(args, capsys)
    assert_one_line_error(code, err, contains=contains)


def test_out_a_dangling_link_or_a_loop_and_a_suite_file_name_with_a_space(tmp_path, capsys):
    (tmp_path / "dangling").symlink_to(tmp_path / "missing" / "target")
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    suite = tmp_path / "my suite.toml"
    suite.write_text(GOOD + "[data]\nsamples = 2\n")
    for out in ("dangling", "loop1"):
        code, _, err = cli(["run", suite, "--out", tmp_path / out, "--quiet", "--device", "cpu"], capsys)
        assert_one_line_error(code, err, contains="symbolic link to nothing")
    from questbench.config.suite import load_suite
    assert load_suite(str(suite)).name == "my-suite"  # the stem made folder-safe, not refused


def test_bad_output_paths(tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for out, contains in ((a_file, "is not a folder"), (a_file / "sub", "is not a folder")):
        code, _, err = cli(["run", "--out", out, "--quiet", "--limit", "2"], capsys)
        assert_one_line_error(code, err, contains=contains)
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "notes.txt").write_text("mine")
    code, _, err = cli(["run", "--out", tmp_path / "own", "--quiet", "--limit", "2"], capsys)
    assert_one_line_error(code, err, contains="holds no questbench results")
    assert sorted(p.name for p in (tmp_path / "own").iterdir()) == ["notes.txt"]
    code, _, err = cli(["toy", "--out", a_file, "--quick", "--quiet"], capsys)
    assert_one_line_error(code, err, contains="is not a folder")
    code, _, err = cli(["run", tmp_path / "own", "--quiet"], capsys)  # a folder given as the suite
    assert_one_line_error(code, err, contains="is a folder")


def _results_folder(tmp_path, tiny_pair):
    from questbench.run.runner import run_suite
    from questbench.config.suite import parse_suite
    text = (f'registry = ["{tiny_pair}"]\nmodels = ["tiny-std", "tiny-quest"]\nnum_workers = 0\n'
            '[data]\nsamples = 6\n')
    out = tmp_path / "res"
    run_suite(parse_suite(text, "t.toml"), out, device="cpu", quiet=True)
    return out


def test_bad_results_folders_and_job_files(tmp_path, tiny_pair, capsys):
    out = _results_folder(tmp_path, tiny_pair)
    code, _, err = cli(["leaderboard", out, "--output", tmp_path], capsys)  # --output a folder
    assert_one_line_error(code, err, contains="is a folder")
    code, _, err = cli(["leaderboard", tmp_path / "nothing-here"], capsys)
    assert_one_line_error(code, err, contains="holds no questbench results")
    code, _, err = cli(["compare", out, "tiny-std", "nobody"], capsys)
    assert_one_line_error(code, err, contains="'nobody'")
    job = next((out / "jobs").glob("*.json"))
    good = job.read_bytes()
    doc = json.loads(good)
    broken = {"binary": b"\x00\xff\x13", "empty object": b"{}", "a list": b"[1, 2]",
              "truncated": good[: len(good) // 2],
              "record without correct": json.dumps({**doc, "records": [
                  {k: v for k, v in r.items() if k != "correct"} for r in doc["records"]]}).encode(),
              "rows missing": json.dumps({**doc, "records": doc["records"][:-1]}).encode(),
              "another suite": json.dumps({**doc, "job": {**doc["job"], "suite_sha256": "0" * 64}}).encode()}
    for what, data in broken.items():
        job.write_bytes(data)
        code, _, err = cli(["leaderboard", out, "--format", "csv"], capsys)
        assert_one_line_error(code, err, contains=job.name)
        with pytest.raises(QuestbenchError):
            questbench.load_results(out)
    job.write_bytes(good)
    (out / "jobs" / "dropped-in.json").write_bytes(good)  # a job file of this very run, under a foreign name
    code, _, err = cli(["leaderboard", out, "--format", "csv"], capsys)
    assert_one_line_error(code, err, contains="foreign")


def test_bad_registries_and_cards(tmp_path, tiny_pair, capsys):
    cases = {"binary": b"\xff\xfe\x00",
             "unknown key": b'[[model]]\nname = "m"\narch = "a"\nattention = "quest"\nsource = "path:m.pt"\ncolour = 1',
             "missing source": b'[[model]]\nname = "m"\narch = "a"\nattention = "quest"',
             "classes a word": b'[[model]]\nname = "m"\narch = "a"\nattention = "quest"\nsource = "path:m"\n'
                               b'num_classes = "ten"',
             "unknown attention": b'[[model]]\nname = "m"\narch = "a"\nattention = "sparse"\nsource = "path:m"',
             "bad source kind": b'[[model]]\nname = "m"\narch = "a"\nattention = "quest"\nsource = "ftp:m"'}
    for what, data in cases.items():
        reg = tmp_path / "reg.toml"
        reg.write_bytes(data)
        code, _, err = cli(["models", "--registry", reg], capsys)
        assert_one_line_error(code, err, contains="reg.toml")
    card = tmp_path / "tiny-std.json"
    card.write_text(json.dumps({k: v for k, v in json.loads(card.read_text()).items() if k != "spec"}))
    suite = tmp_path / "s.toml"
    suite.write_text(f'models = ["{tmp_path / "tiny-std.safetensors"}"]\n[data]\nsamples = 2\n')
    code, _, err = cli(["run", suite, "--out", tmp_path / "o", "--quiet"], capsys)
    assert_one_line_error(code, err, contains="no 'spec'")


def test_api_raises_questbench_errors():
    from questbench.config.suite import load_suite, parse_suite
    for call in (lambda: questbench.load_model(5), lambda: questbench.load_model("fmnist-vit-quest-s0", device="banana"),
                 lambda: parse_suite(None), lambda: load_suite(5), lambda: questbench.load_results("/no/such/dir"),
                 lambda: questbench.load_dataset("mnist-7")):
        with pytest.raises(QuestbenchError):
            call()


@pytest.mark.slow
def test_the_installed_script_prints_one_line(tmp_path):
    (tmp_path / "s.toml").write_bytes(b"\xff\xfe")
    r = subprocess.run([sys.executable, "-m", "questbench.cli", "run", str(tmp_path / "s.toml")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
