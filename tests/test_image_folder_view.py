"""Image folders as they are (issue 38): data.resize / data.crop (0: as stored) reach the model untouched, a folder
whose class count differs from the model's outputs is refused unless data.classes fixes the order, and two files
with one sample id are refused (issue 36)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import questbench
from questbench.errors import QuestbenchError


def _folder(root, classes=10, per_class=2, size=32, seed=0):
    rng = np.random.default_rng(seed)
    for c in range(classes):
        d = root / f"c{c:02d}"
        d.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(d / f"img{i}.png")
    return root


class TinyCNN(torch.nn.Module):
    """A 32 px model that only takes 32 x 32 inputs (its linear layer fixes the size)."""

    def __init__(self, classes=10):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 32 * 32, classes)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _suite(root, **data):
    return {"seed": 0, "batch_size": 8, "num_workers": 0,
            "data": {"dataset": "imagefolder", "root": str(root), **data}}


def test_images_as_stored_reach_the_model_untouched(tmp_path):
    root = _folder(tmp_path / "cifar")
    net = TinyCNN()
    res = questbench.evaluate(net, suite=_suite(root, resize=0, crop=0), out=tmp_path / "out")
    got = res.samples[res.samples.evaluation == "clean"].set_index("sample_id").pred
    for path in sorted(root.glob("*/*.png")):
        x = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float()[None] / 255
        with torch.no_grad():
            assert got[f"{path.parent.name}/{path.stem}"] == int(net(x).argmax(1))


def test_the_default_view_names_the_keys_that_fix_a_size_mismatch(tmp_path):
    root = _folder(tmp_path / "cifar")
    with pytest.raises(QuestbenchError, match="data.resize and data.crop"):
        questbench.evaluate(TinyCNN(), suite=_suite(root), out=tmp_path / "out")


def test_a_folder_with_fewer_classes_than_outputs_is_refused_without_a_class_list(tmp_path):
    root = _folder(tmp_path / "eight", classes=8)
    with pytest.raises(QuestbenchError, match="8 class folders .* 10 outputs.*data.classes"):
        questbench.evaluate(TinyCNN(), suite=_suite(root, resize=0, crop=0), out=tmp_path / "out")
    order = tmp_path / "classes.txt"
    order.write_text("\n".join(f"c{c:02d}" for c in range(10)))
    res = questbench.evaluate(TinyCNN(), suite=_suite(root, resize=0, crop=0, classes=str(order)),
                              out=tmp_path / "out2")
    assert len(res.samples) == 16


def test_two_files_with_one_sample_id_are_refused(tmp_path):
    root = _folder(tmp_path / "dup")
    Image.new("RGB", (32, 32)).save(root / "c00" / "img0.jpg")
    with pytest.raises(QuestbenchError, match="share the sample id 'c00/img0'"):
        questbench.load_dataset("imagefolder", root=root)


def test_resize_and_crop_belong_to_image_folders():
    from questbench.config.suite import parse_suite
    with pytest.raises(QuestbenchError, match="resize applies to image folders"):
        parse_suite('models = ["m"]\n[data]\nresize = 0\n', "s.toml")
