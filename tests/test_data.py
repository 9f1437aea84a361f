import numpy as np
import pytest
from PIL import Image

import questbench
from questbench.data.cifar_c import CifarCSource, check_cifar_c_folder, load_cifar_c_clean
from questbench.data.idx import read_idx, write_idx
from questbench.data.imagefolder import ImageFolderDataset
from questbench.data.imagenet_c import ImageNetCSource, check_alignment, check_imagenet_c_tree
from questbench.errors import QuestbenchError
from questbench.config.settings import CorruptionSetting
from questbench.evaluators.corruptions import evaluate_released

from conftest import make_tiny


def test_idx_round_trip_and_truncation(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a-idx3-ubyte.gz", arr)
    assert np.array_equal(read_idx(tmp_path / "a-idx3-ubyte.gz"), arr)
    write_idx(tmp_path / "b-idx3-ubyte", arr)
    (tmp_path / "b-idx3-ubyte").write_bytes((tmp_path / "b-idx3-ubyte").read_bytes()[:-3])
    with pytest.raises(QuestbenchError, match="truncated"):
        read_idx(tmp_path / "b-idx3-ubyte")
    (tmp_path / "c").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(QuestbenchError, match="magic"):
        read_idx(tmp_path / "c")


def test_builtin_fashion_mnist_test_split():
    ds = questbench.load_dataset("fashion-mnist", split="test")
    assert len(ds) == 10000
    x, y = ds[0]
    assert x.shape == (1, 28, 28) and 0 <= float(x.min()) and float(x.max()) <= 1 and isinstance(y, int)
    assert np.bincount(ds.labels).tolist() == [1000] * 10


def test_fashion_mnist_from_user_folder(tmp_path):
    rng = np.random.default_rng(0)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 255, (5, 28, 28)))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(5))
    ds = questbench.load_dataset("fashion-mnist", split="train", root=tmp_path)
    assert len(ds) == 5 and ds.source.startswith("user:")
    with pytest.raises(QuestbenchError, match="no Fashion-MNIST test"):
        questbench.load_dataset("fashion-mnist", split="test", root=tmp_path)
    with pytest.raises(QuestbenchError, match="split"):
        questbench.load_dataset("fashion-mnist", split="val")


def _jpeg(path, rng, size=(40, 48)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((rng.random((*size, 3)) * 255).astype(np.uint8)).save(path, quality=95)


@pytest.fixture
def imagenet_tree(tmp_path):
    rng = np.random.default_rng(0)
    wnids = ["n01440764", "n01443537"]
    for w in wnids:
        for k in range(2):
            _jpeg(tmp_path / "val" / w / f"ILSVRC2012_val_{w[-2:]}{k}.JPEG", rng)
            for c in ("fog", "contrast"):
                for s in (1, 2):
                    _jpeg(tmp_path / "c" / c / str(s) / w / f"ILSVRC2012_val_{w[-2:]}{k}.JPEG", rng, (224, 224))
    return tmp_path


def test_imagenet_c_tree_reads_and_aligns(imagenet_tree):
    clean = ImageFolderDataset(imagenet_tree / "val")
    assert len(clean) == 4 and clean[0][0].shape == (3, 224, 224)
    assert clean.sample_ids[0].startswith("n01440764/")
    check_imagenet_c_tree(imagenet_tree / "c", ["fog", "contrast"], [1, 2])
    source = ImageNetCSource(imagenet_tree / "c", clean)
    settings = [CorruptionSetting("fog", 1), CorruptionSetting("contrast", 2)]
    check_alignment(source, settings)
    model = make_tiny(input_size=(3, 224, 224), mean=(0.5,) * 3, std=(0.5,) * 3,
                      arch_kwargs=dict(patch_size=56, embed_dim=16, depth=1, num_heads=2))
    out = list(evaluate_released({"m": model}, source, clean.labels, clean.sample_ids, settings, batch_size=3,
                                 num_workers=0))
    assert [(st.key, len(r)) for st, _, r in out] == [("fog/1", 4), ("contrast/2", 4)]


def test_imagenet_c_broken_layout_names_what_is_missing(imagenet_tree):
    with pytest.raises(QuestbenchError, match="fog/3"):
        check_imagenet_c_tree(imagenet_tree / "c", ["fog"], [1, 3])
    clean = ImageFolderDataset(imagenet_tree / "val")
    victim = next((imagenet_tree / "c" / "fog" / "2").rglob("*.JPEG"))
    victim.unlink()
    with pytest.raises(QuestbenchError, match="fog/2 lacks 1"):
        check_alignment(ImageNetCSource(imagenet_tree / "c", clean), [CorruptionSetting("fog", 2)])
    with pytest.raises(QuestbenchError, match="not found"):
        check_imagenet_c_tree(imagenet_tree / "nope", ["fog"], [1])


def test_cifar_c_layout(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.tile(np.arange(10), 1000)
    np.save(tmp_path / "labels.npy", np.concatenate([labels] * 5))
    arr = np.zeros((50000, 32, 32, 3), np.uint8)
    for s in range(5):
        arr[s * 10000:(s + 1) * 10000] = s + 1  # severity-major: the value tells the severity
    np.save(tmp_path / "fog.npy", arr)
    np.save(tmp_path / "clean.npy", rng.integers(0, 255, (10000, 32, 32, 3), dtype=np.uint8))
    check_cifar_c_folder(tmp_path, ["fog"])
    src = CifarCSource(tmp_path, [0, 9999])
    assert src(CorruptionSetting("fog", 3), 1)[0, 0, 0] == 3
    clean = load_cifar_c_clean(tmp_path)
    assert len(clean) == 10000 and clean.sample_ids[5] == "test/00005"
    with pytest.raises(QuestbenchError, match="contrast.npy"):
        check_cifar_c_folder(tmp_path, ["fog", "contrast"])
    np.save(tmp_path / "labels.npy", labels)
    with pytest.raises(QuestbenchError, match="50000 integer labels"):
        check_cifar_c_folder(tmp_path, ["fog"])


def test_suite_classes_file_fixes_the_label_order(imagenet_tree, tmp_path):
    """data.classes: a wnid file gives the class index of each folder (1000-way ImageNet order with only some
    folders on disk); without it, labels follow the sorted folder names."""
    from questbench.data import load_dataset
    from questbench.config.suite import parse_suite

    wnids = tmp_path / "wnids.txt"
    wnids.write_text("n00000001\nn01443537\nn01440764\n")
    s = parse_suite(f'models = ["m"]\n[data]\ndataset = "imagenet"\nroot = "{imagenet_tree / "val"}"\n'
                    f'classes = "{wnids}"\n', "t.toml")
    ds = load_dataset(s.data.dataset, s.data.split, root=s.data.root, **s.data.loader_kwargs())
    by_folder = {sid.split("/")[0]: int(lbl) for sid, lbl in zip(ds.sample_ids, ds.labels)}
    assert by_folder == {"n01443537": 1, "n01440764": 2} and ds.num_classes == 3
    plain = load_dataset("imagenet", root=imagenet_tree / "val")
    assert {sid.split("/")[0]: int(lbl) for sid, lbl in zip(plain.sample_ids, plain.labels)} == {
        "n01440764": 0, "n01443537": 1}
    wnids.write_text("")
    with pytest.raises(QuestbenchError, match="lists no classes"):
        s.data.loader_kwargs()
