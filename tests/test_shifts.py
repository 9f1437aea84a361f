"""Distribution-shift test sets in their released layouts, with their published protocols: synthetic fixtures
(tiny JPEGs made here) in each exact layout."""
import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from questbench.data.shifts import load_shift, synsets
from questbench.errors import QuestbenchError
from questbench.evaluators.shift import evaluate_shift

WNIDS = synsets("imagenet_synsets")


def _jpeg(path, rng):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)).save(path, quality=90)


class FixedLogits(nn.Module):
    """1000-way logits that always rank class `top` first, then `second`: the masking decides the prediction."""

    def __init__(self, top: int, second: int):
        super().__init__()
        self.top, self.second = top, second

    def forward(self, x):
        logits = torch.zeros(len(x), 1000)
        logits[:, self.top], logits[:, self.second] = 2.0, 1.0
        return logits


def test_imagenet_a_masks_logits_to_its_200_classes(tmp_path):
    rng = np.random.default_rng(0)
    a = synsets("imagenet_a_synsets")
    for w in a[:2]:
        _jpeg(tmp_path / "a" / w / "x.jpg", rng)
    ds = load_shift("imagenet-a", tmp_path / "a")
    assert sorted(int(x) for x in ds.labels) == sorted(WNIDS.index(w) for w in a[:2]) and ds.class_mask.sum() == 200
    outside = next(i for i, w in enumerate(WNIDS) if w not in a)
    target = WNIDS.index(a[0])
    records = evaluate_shift(FixedLogits(outside, target), ds, 8, "cpu")
    # unmasked the prediction would be `outside`; the protocol predicts among the 200 only
    assert all(r["pred"] == target for r in records)
    assert [r["correct"] for r in records] == [int(lbl) == target for lbl in ds.labels]
    (tmp_path / "a" / "n99999999").mkdir()
    with pytest.raises(QuestbenchError, match="n99999999"):
        load_shift("imagenet-a", tmp_path / "a")


def test_imagenet_r_sketch_and_v2_layouts(tmp_path):
    rng = np.random.default_rng(1)
    r = synsets("imagenet_r_synsets")
    _jpeg(tmp_path / "r" / r[5] / "art.jpg", rng)
    assert int(load_shift("imagenet-r", tmp_path / "r").labels[0]) == WNIDS.index(r[5])
    _jpeg(tmp_path / "sketch" / WNIDS[7] / "s.JPEG", rng)
    assert int(load_shift("imagenet-sketch", tmp_path / "sketch").labels[0]) == 7
    for k in (0, 3, 999):
        _jpeg(tmp_path / "v2" / str(k) / "v.jpeg", rng)
    v2 = load_shift("imagenet-v2", tmp_path / "v2")
    assert sorted(int(x) for x in v2.labels) == [0, 3, 999]
    (tmp_path / "v2" / "1000").mkdir()
    with pytest.raises(QuestbenchError, match="1000"):
        load_shift("imagenet-v2", tmp_path / "v2")
    with pytest.raises(QuestbenchError, match="not found"):
        load_shift("imagenet-sketch", tmp_path / "nowhere")


def test_imagenet_real_multi_label_and_exclusion(tmp_path):
    rng = np.random.default_rng(2)
    real = [[] for _ in range(50000)]
    real[0] = [5, 9]          # val image 1: correct if the prediction is 5 or 9
    real[1] = []              # val image 2: no ReaL label -> excluded
    real[2] = [7]             # val image 3
    (tmp_path / "real.json").write_text(json.dumps(real))
    for k, w in ((1, WNIDS[5]), (2, WNIDS[1]), (3, WNIDS[3])):
        _jpeg(tmp_path / "val" / w / f"ILSVRC2012_val_{k:08d}.JPEG", rng)
    ds = load_shift("imagenet-real", tmp_path / "val", str(tmp_path / "real.json"))
    assert len(ds) == 2 and ds.excluded == 1 and sorted(map(tuple, ds.label_sets)) == [(5, 9), (7,)]
    records = {r["sample_id"].split("/")[1]: r for r in evaluate_shift(FixedLogits(9, 0), ds, 8, "cpu")}
    assert records["ILSVRC2012_val_00000001"]["correct"] is True  # 9 is in {5, 9} though its val label is 5
    assert records["ILSVRC2012_val_00000003"]["correct"] is False
    assert "ILSVRC2012_val_00000002" not in records
    sub = ds.subset([1])
    assert sub.label_sets == [ds.label_sets[1]]  # label sets follow a subset


def test_shift_suite_runs_and_reports(tmp_path, tiny_pair):
    """A suite with [shifts]: jobs per model and set, a distribution-shift table and paired rows."""
    from questbench.report.markdown import render_markdown
    from questbench.store.results import load_results
    from questbench.run.runner import run_suite
    from questbench.config.suite import parse_suite
    rng = np.random.default_rng(3)
    for k in range(6):
        _jpeg(tmp_path / "v2" / str(k % 3) / f"{k}.jpeg", rng)
    text = (f'registry = ["{tiny_pair}"]\nmodels = ["tiny-std", "tiny-quest"]\nnum_workers = 0\n[data]\nsamples = 4\n'
            f'[shifts]\nimagenet-v2 = "{tmp_path / "v2"}"\n')
    run_suite(parse_suite(text, "t.toml"), tmp_path / "out", device="cpu", quiet=True)
    res = load_results(tmp_path / "out")
    sh = res.samples[res.samples.evaluation == "shift"]
    assert len(sh) == 2 * 6 and set(sh.setting) == {"imagenet-v2"}
    md = render_markdown(res)
    assert "## Distribution shift" in md and "imagenet-v2 (n=6)*" in md
    assert "| distribution shift | imagenet-v2 |" in md


def test_real_label_sets_are_part_of_the_dataset_identity(tmp_path):
    """Another real.json must not reuse results: the label sets enter the fingerprint that keys the jobs."""
    from questbench.run.prepare import dataset_fingerprint
    rng = np.random.default_rng(4)
    _jpeg(tmp_path / "val" / WNIDS[5] / "ILSVRC2012_val_00000001.JPEG", rng)
    prints = []
    for labels in ([5], [5, 9]):
        real = [[] for _ in range(50000)]
        real[0] = labels
        (tmp_path / "real.json").write_text(json.dumps(real))
        prints.append(dataset_fingerprint(load_shift("imagenet-real", tmp_path / "val", str(tmp_path / "real.json"))))
    assert prints[0] != prints[1]
