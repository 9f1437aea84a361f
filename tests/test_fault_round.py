"""The second fault round (issue 36): malformed data files, builds a model cannot have, devices that are not
there, the hub offline, folders with a damaged job, and what several ranks print and do when signalled or when
the disk fills. Each case failed on the main before it (a traceback, a silent skip, two lines for one error)."""
import json
import os
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import questbench
from questbench.errors import QuestbenchError

from test_bad_inputs import GOOD, assert_one_line_error, cli


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text, text
    return text


# --- data files ------------------------------------------------------------------------------------------
def _idx(dtype_code: int, array: np.ndarray) -> bytes:
    return bytes([0, 0, dtype_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


IMAGES = np.random.default_rng(0).integers(0, 255, (8, 28, 28), dtype=np.uint8)
LABELS = np.arange(8, dtype=np.uint8)
IDX_CASES = {  # (image file, label file) -> a piece of the one-line error
    "float32 images": (_idx(0x0D, IMAGES.astype(">f4")), _idx(0x08, LABELS), "must be uint8"),
    "zero images": (_idx(0x08, IMAGES[:0]), _idx(0x08, LABELS[:0]), "holds no images"),
    "labels -1": (_idx(0x08, IMAGES), _idx(0x09, np.full(8, -1, np.int8)), ">= 0, found -1"),
    "2-D labels": (_idx(0x08, IMAGES), _idx(0x08, LABELS[:, None]), "one integer class per image"),
    "float labels": (_idx(0x08, IMAGES), _idx(0x0D, LABELS.astype(">f4")), "one integer class per image"),
}


@pytest.mark.parametrize("case", sorted(IDX_CASES))
def test_malformed_idx_files_are_one_line(case, tmp_path):
    images, labels, expected = IDX_CASES[case]
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(images)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(labels)
    with pytest.raises(QuestbenchError) as exc:
        questbench.load_dataset("fashion-mnist", root=tmp_path)
    assert expected in _one_line(exc.value)


@pytest.mark.parametrize("labels", ["garbage", "pickled", "floats"])
def test_cifar_c_labels_that_are_not_a_plain_integer_array(labels, tmp_path):
    np.save(tmp_path / "clean.npy", np.zeros((10000, 32, 32, 3), np.uint8))
    if labels == "garbage":
        (tmp_path / "labels.npy").write_bytes(b"\x93NUMPY garbage that is no array header")
    elif labels == "pickled":  # a pickle payload is never loaded
        np.save(tmp_path / "labels.npy", np.array([{"x": 1}] * 50000, dtype=object), allow_pickle=True)
    else:
        np.save(tmp_path / "labels.npy", np.zeros(50000, np.float32))
    with pytest.raises(QuestbenchError) as exc:
        questbench.load_dataset("cifar10-c", root=tmp_path)
    assert "labels.npy" in _one_line(exc.value)


def test_a_decompression_bomb_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    Image.new("RGB", (64, 64)).save(tmp_path / "a" / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL refuses above twice this: 4,096 pixels here
    ds = questbench.load_dataset("imagenet", root=tmp_path)
    with pytest.raises(QuestbenchError) as exc:
        ds[0]
    assert "bomb.png" in _one_line(exc.value) and "decompression bomb" in str(exc.value)


def test_a_corrupt_image_read_by_dataloader_workers_is_one_line(tmp_path):
    from questbench.evaluators.common import loaded_batches
    for k in range(3):
        (tmp_path / "a").mkdir(exist_ok=True)
        Image.new("RGB", (40, 40)).save(tmp_path / "a" / f"{k}.jpg")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    ds = questbench.load_dataset("imagenet", root=tmp_path, resize=0, crop=0)
    with pytest.raises(QuestbenchError) as exc:  # DataLoader would wrap it in the worker's traceback
        list(loaded_batches(ds, 2, "cpu", num_workers=2))
    assert "bad.jpg" in _one_line(exc.value)


def test_a_suite_nested_3000_deep_is_one_line(tmp_path, capsys):
    suite = tmp_path / "s.toml"
    suite.write_text(GOOD + "x = " + "[" * 3000 + "]" * 3000 + "\n")
    code, _, err = cli(["run", suite, "--out", tmp_path / "out", "--quiet"], capsys)
    assert_one_line_error(code, err, contains="too deeply")
    reg = tmp_path / "reg.toml"
    reg.write_text("x = " + "[" * 3000 + "]" * 3000 + "\n")
    code, _, err = cli(["models", "--registry", reg], capsys)
    assert_one_line_error(code, err, contains="reg.toml")


# --- models --------------------------------------------------------------------------------------------
def test_registry_arch_kwargs_the_architecture_cannot_build(tmp_path, tiny_pair, capsys):
    text = tiny_pair.read_text().replace("num_heads = 2", "num_heads = 0", 1)
    tiny_pair.write_text(text)
    code, _, err = cli(["run", _suite(tmp_path, tiny_pair), "--out", tmp_path / "o", "--quiet", "--device", "cpu"],
                       capsys)
    assert_one_line_error(code, err, contains="num_heads")


def _suite(tmp_path, registry):
    p = tmp_path / "s.toml"
    p.write_text(f'registry = ["{registry}"]\nmodels = ["tiny-std"]\nnum_workers = 0\n[data]\nsamples = 2\n')
    return p


def test_a_device_this_machine_lacks(monkeypatch):
    import torch
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(QuestbenchError, match="MPS"):
        questbench.load_model("fmnist-vit-quest-s0", device="mps")


def _timm_entry(tmp_path):
    reg = tmp_path / "timm.toml"
    reg.write_text('[[model]]\nname = "vt"\narch = "vit_tiny_patch16_224"\nattention = "quest"\n'
                   'source = "timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k"\n')
    return reg


def test_timm_weights_offline_fail_at_once_without_retries(tmp_path, monkeypatch):
    from huggingface_hub import constants as hub

    from questbench.models import registry
    monkeypatch.setattr(registry, "_hub_reachable", lambda endpoint: False)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(QuestbenchError) as exc:
        questbench.load_model("vt", registry_files=[_timm_entry(tmp_path)])
    assert "not in the local Hugging Face cache and the hub cannot be reached" in _one_line(exc.value)
    assert hub.HF_HUB_OFFLINE is False or os.environ.get("HF_HUB_OFFLINE")  # restored


def test_timm_weights_in_the_cache_load_offline(tmp_path, monkeypatch):
    """The fast offline path must not cost a user with a filled cache their model: weights written into a hub
    cache in its on-disk layout load with the hub unreachable."""
    import timm
    import torch
    from huggingface_hub import constants as hub
    from safetensors.torch import save_file

    from questbench.models import registry
    net = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    snap = tmp_path / "cache" / "models--timm--vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    (snap / "refs").mkdir(parents=True)
    (snap / "refs" / "main").write_text("0" * 40)
    (snap / "snapshots" / ("0" * 40)).mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()},
              str(snap / "snapshots" / ("0" * 40) / "model.safetensors"))
    monkeypatch.setattr(registry, "_hub_reachable", lambda endpoint: False)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "cache"))
    model = questbench.load_model("vt", registry_files=[_timm_entry(tmp_path)])
    assert torch.equal(model.net.pos_embed, net.pos_embed)


def test_a_model_with_integer_logits_is_refused_before_any_job(tmp_path):
    import torch

    class Rounded(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(784, 10)

        def forward(self, x):
            return self.fc(x.flatten(1)).round().long()
    with pytest.raises(QuestbenchError, match="int64 logits"):
        questbench.evaluate(Rounded(), {"data": {"samples": 4}, "attacks": [{"attack": "fgsm", "eps": 0.1}]},
                            out=tmp_path / "o", preprocessing={"input_size": (1, 28, 28)})
    assert not (tmp_path / "o" / "jobs").exists()


# --- results folders -----------------------------------------------------------------------------------
def test_a_damaged_job_is_redone_not_skipped(tmp_path, tiny_pair):
    from questbench.config.suite import parse_suite
    from questbench.run.runner import run_suite
    suite = parse_suite(f'registry = ["{tiny_pair}"]\nmodels = ["tiny-std", "tiny-quest"]\nnum_workers = 0\n'
                        '[data]\nsamples = 6\n', "t.toml")
    out = tmp_path / "res"
    run_suite(suite, out, device="cpu", quiet=True)
    good = {f.name: f.read_bytes() for f in (out / "jobs").glob("*.json")}
    edited, replaced = sorted(good)[:2]
    doc = json.loads(good[edited])
    doc["job"]["format"] = 2  # an edit no reader accepts: before, `run` skipped it because it existed
    (out / "jobs" / edited).write_text(json.dumps(doc))
    (out / "jobs" / replaced).unlink()
    (out / "jobs" / replaced).mkdir()  # a folder in a job file's place
    summary = run_suite(suite, out, device="cpu", quiet=True)
    assert summary.jobs_run == 2 and len(summary.notes) == 2
    assert all("redone" in n for n in summary.notes)
    again = {f.name: json.loads(f.read_bytes())["records"] for f in (out / "jobs").glob("*.json")}
    assert again == {name: json.loads(data)["records"] for name, data in good.items()}  # the same rows again
    assert len(list((out / "damaged").iterdir())) == 2
    questbench.load_results(out)
    # a job file that is a link to a file elsewhere: the link is set aside, its target never touched
    target = tmp_path / "precious.json"
    target.write_text("mine")
    (out / "jobs" / edited).unlink()
    (out / "jobs" / edited).symlink_to(target)
    assert run_suite(suite, out, device="cpu", quiet=True).jobs_run == 1
    assert target.read_text() == "mine" and (out / "jobs" / edited).is_file()
    # damaged/ planted as a link: refused, nothing moved through it
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "damaged").rename(tmp_path / "old-damaged")
    (out / "damaged").symlink_to(elsewhere)
    (out / "jobs" / edited).write_text("{}")
    with pytest.raises(QuestbenchError, match="damaged is a symbolic link"):
        run_suite(suite, out, device="cpu", quiet=True)
    assert not any(elsewhere.iterdir())


# --- ranks -----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_launcher_gives_back_the_signal_handlers(tmp_path):
    """torch elastic installs handlers of its own that raise its SignalException; after the ranks end, a
    SIGTERM or SIGHUP while the leaderboard renders must reach questbench's handler (exit 143 / 129, one line)."""
    from questbench.run.distributed import launch

    def mine(signum, frame):
        pass
    before = {s: signal.signal(s, mine) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        launch(2, [sys.executable, "-c", "pass"], tmp_path / "out")
        assert signal.getsignal(signal.SIGTERM) is mine and signal.getsignal(signal.SIGHUP) is mine
    finally:
        for s, h in before.items():
            signal.signal(s, h)


@pytest.mark.slow
def test_two_ranked_runs_into_one_folder_started_together(tmp_path, tiny_pair):
    suite = _suite(tmp_path, tiny_pair)
    cmd = [sys.executable, "-m", "questbench.cli", "run", str(suite), "--out", str(tmp_path / "o"), "--quiet",
           "--ranks", "2"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    second = subprocess.run(cmd, capture_output=True, text=True)
    out1, err1 = first.communicate(timeout=300)
    codes = sorted((first.returncode, second.returncode))
    loser_err = err1 if first.returncode else second.stderr
    assert codes == [0, 2], (err1, second.stderr)
    lines = loser_err.strip().splitlines()
    assert len(lines) == 1 and "is in use by another questbench run" in lines[0], loser_err


@pytest.mark.slow
def test_a_full_disk_under_two_ranks_is_said_once_with_its_path(tmp_path, tiny_pair):
    small = tmp_path / "small"
    small.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=120k", "tmpfs", str(small)],
                                           capture_output=True).returncode:
        pytest.skip("needs to mount a small tmpfs (root)")
    try:
        suite = _suite(tmp_path, tiny_pair)
        suite.write_text(suite.read_text().replace('models = ["tiny-std"]', 'models = ["tiny-std", "tiny-quest"]')
                         .replace("samples = 2", "samples = 400") + "[[attacks]]\nattack = \"fgsm\"\n"
                         "eps = [\"1/255\", \"2/255\", \"4/255\", \"8/255\"]\n")
        r = subprocess.run([sys.executable, "-m", "questbench.cli", "run", str(suite), "--out", str(small / "o"),
                            "--quiet", "--ranks", "2"], capture_output=True, text=True, timeout=300)
    finally:
        subprocess.run(["umount", str(small)])
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("error: No space left on device: ") and str(small / "o") in lines[0]
