import numpy as np
import pytest
import torch
from imagecorruptions import corrupt

from questbench.data.arrays import ArrayDataset
from questbench.errors import QuestbenchError
from questbench.evaluators.corruption_grid import CorruptionGrid, OnTheFly, _grid_loader, _pieces
from questbench.config.settings import CorruptionSetting
from questbench.evaluators.corruption_reference import corrupted_sample, corruption_seed, jpeg_round_trip, prepare_image
from questbench.evaluators.corruptions import evaluate_corruptions
from questbench.config.corruptions import ALL_CORRUPTIONS

from conftest import make_tiny


@pytest.fixture(scope="module")
def image():
    return (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)


@pytest.mark.parametrize("corruption", ALL_CORRUPTIONS)
@pytest.mark.slow
def test_same_as_direct_call_and_deterministic(corruption, image):
    for severity in (1, 2, 3, 4, 5):
        seed = corruption_seed(0, "s1", corruption, severity)
        ours = corrupted_sample(image, "s1", corruption, severity, suite_seed=0)
        np.random.seed(seed)
        kwargs = {"seed": seed} if corruption in ("glass_blur", "impulse_noise") else {}
        direct = corrupt(image, corruption_name=corruption, severity=severity, **kwargs)
        np.random.seed(12345)  # global state left behind must not matter
        again = corrupted_sample(image, "s1", corruption, severity, suite_seed=0)
        assert np.array_equal(ours, direct), (corruption, severity)
        assert np.array_equal(ours, again), (corruption, severity)


@pytest.mark.parametrize("corruption", ["gaussian_noise", "shot_noise", "impulse_noise", "glass_blur", "snow",
                                        "spatter", "speckle_noise", "elastic_transform"])
def test_different_samples_get_different_noise(corruption, image):
    a = corrupted_sample(image, "s1", corruption, 3, suite_seed=0)
    b = corrupted_sample(image, "s2", corruption, 3, suite_seed=0)
    c = corrupted_sample(image, "s1", corruption, 3, suite_seed=1)
    assert not np.array_equal(a, b) and not np.array_equal(a, c)


def test_image_policy_gray_small_nonsquare():
    gray = (np.random.default_rng(1).random((28, 28)) * 255).astype(np.uint8)
    prepared = prepare_image(gray)
    assert prepared.shape == (32, 32, 3) and np.array_equal(prepared[..., 0], prepared[..., 1])
    assert corrupted_sample(gray, "x", "fog", 2, 0).shape == (32, 32, 3)
    rect = (np.random.default_rng(2).random((40, 64, 3)) * 255).astype(np.uint8)
    assert corrupted_sample(rect, "x", "motion_blur", 2, 0).shape == (40, 64, 3)


def test_faithful_mode_resizes_crops_and_jpegs():
    img = (np.random.default_rng(3).random((300, 400, 3)) * 255).astype(np.uint8)
    out = corrupted_sample(img, "x", "contrast", 1, 0, mode="faithful")
    assert out.shape == (224, 224, 3)
    assert np.array_equal(out, jpeg_round_trip(corrupt(prepare_image(img, "faithful"), corruption_name="contrast",
                                                       severity=1)))


def test_unknown_corruption_and_severity():
    img = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(QuestbenchError, match="unknown corruption"):
        corrupted_sample(img, "x", "rain", 1, 0)
    with pytest.raises(QuestbenchError, match="severity"):
        corrupted_sample(img, "x", "fog", 6, 0)


def test_evaluator_one_record_per_sample_corruption_severity():
    rng = np.random.default_rng(0)
    ds = ArrayDataset((rng.random((6, 28, 28)) * 255).astype(np.uint8), rng.integers(0, 10, 6), "t", "t")
    settings = [CorruptionSetting(c, s) for c in ("gaussian_noise", "pixelate") for s in (1, 5)]
    models = {"a": make_tiny("standard"), "b": make_tiny("quest")}
    out = list(evaluate_corruptions(models, ds, settings, suite_seed=0, batch_size=4, num_workers=0))
    assert len(out) == len(settings) * 2
    keys = {(st.key, name) for st, name, _ in out}
    assert len(keys) == 8
    for st, name, records in out:
        assert [r["sample_id"] for r in records] == ds.sample_ids
    # the same corrupted images reach the model as a direct computation
    st, name, records = out[0]
    x = torch.stack([torch.from_numpy(corrupted_sample(ds.images[i], ds.sample_ids[i], st.corruption, st.severity, 0))
                     .permute(2, 0, 1).float() / 255 for i in range(6)])
    with torch.no_grad():
        pred = models[name](x).argmax(1)
    assert [r["pred"] for r in records] == pred.tolist()
    # workers give identical results
    out_w = list(evaluate_corruptions(models, ds, settings, suite_seed=0, batch_size=4, num_workers=2))
    assert [r for *_, r in out_w] == [r for *_, r in out]


def test_pieces_cover_every_batch_once_and_split_only_the_tail():
    batches = [list(range(b * 10, b * 10 + 10)) for b in range(12)] + [[120, 121, 122]]
    pieces = _pieces(batches, num_workers=2)
    for b, items in enumerate(batches):
        mine = sorted((o, its) for bb, o, its in pieces if bb == b)
        assert [i for _, its in mine for i in its] == items
        assert all(items[o:o + len(its)] == its for o, its in mine)
    assert [len(its) for b, _, its in pieces if b == 0] == [10]  # early batches go out whole
    assert max(len(its) for b, _, its in pieces if b == 11) < 10  # the last ones in pieces


def test_loader_batches_do_not_depend_on_workers():
    rng = np.random.default_rng(1)
    ds = ArrayDataset((rng.random((7, 32, 32, 3)) * 255).astype(np.uint8), rng.integers(0, 10, 7), "t", "t")
    settings = [CorruptionSetting(c, s) for c in ("shot_noise", "motion_blur") for s in (2, 4)]
    grid = CorruptionGrid(settings, len(ds), ds.labels, OnTheFly(ds, 3, "native"))

    def batches(workers):
        return {tuple(i.tolist()) + (int(s[0]),): (x, y) for x, y, s, i in _grid_loader(grid, 3, workers)}

    serial, parallel = batches(0), batches(2)
    assert serial.keys() == parallel.keys() and len(serial) == 4 * 3
    for key, (x, y) in serial.items():
        assert torch.equal(x, parallel[key][0]) and torch.equal(y, parallel[key][1])
        s, i = key[-1], key[0]
        direct = corrupted_sample(ds.images[i], ds.sample_ids[i], settings[s].corruption, settings[s].severity, 3)
        assert torch.equal(x[0], torch.from_numpy(direct).permute(2, 0, 1).float() / 255)


def test_image_folder_of_mixed_sizes(tmp_path):
    """Native mode corrupts a folder's eval view (files differ in size); without a crop it is a clear error."""
    from PIL import Image

    from questbench.data.imagefolder import ImageFolderDataset
    from questbench.data.transforms import center_crop_resize

    rng = np.random.default_rng(2)
    for k, (w, h) in enumerate([(60, 40), (40, 52), (48, 48)]):
        (tmp_path / f"n0{k % 2}").mkdir(exist_ok=True)
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(tmp_path / f"n0{k % 2}" / f"{k}.JPEG")
    st = CorruptionSetting("contrast", 3)
    ds = ImageFolderDataset(tmp_path, resize=40, crop=36)
    grid = CorruptionGrid([st], len(ds), ds.labels, OnTheFly(ds, 0, "native"))
    x, *_ = next(iter(_grid_loader(grid, 3, 0)))
    assert x.shape == (3, 3, 36, 36)
    view = center_crop_resize(ds.image_uint8(1), 40, 36)
    assert torch.equal(x[1], torch.from_numpy(corrupted_sample(view, ds.sample_ids[1], st.corruption, st.severity, 0))
                       .permute(2, 0, 1).float() / 255)
    raw = ImageFolderDataset(tmp_path, crop=0)
    for workers in (0, 2):
        grid = CorruptionGrid([st], len(raw), raw.labels, OnTheFly(raw, 0, "native"))
        with pytest.raises(QuestbenchError, match=r"^corrupted images of one batch differ in size [^\n]*$"):
            list(_grid_loader(grid, 3, workers))


def test_corruption_sweep_from_python_reduces_to_errors():
    import questbench
    from questbench.stats.metrics import mean_corruption_error

    rng = np.random.default_rng(3)
    ds = ArrayDataset((rng.random((5, 28, 28)) * 255).astype(np.uint8), rng.integers(0, 10, 5), "t", "t")
    models = {"a": make_tiny("standard"), "b": make_tiny("quest", seed=1)}
    errors = questbench.corruption_sweep(models, ds, ["fog", "pixelate"], severities=(2, 5), num_workers=0,
                                         batch_size=4, quiet=True, engine="imagecorruptions")
    records = {(st.key, name): r for st, name, r in evaluate_corruptions(
        models, ds, [CorruptionSetting(c, s) for c in ("fog", "pixelate") for s in (2, 5)], batch_size=4,
        num_workers=0)}
    for name in models:
        assert list(errors[name]) == ["fog", "pixelate"]
        for c in ("fog", "pixelate"):
            assert errors[name][c] == [sum(not r["correct"] for r in records[(f"{c}/{s}", name)]) / 5 for s in (2, 5)]
        per_setting = [sum(not r["correct"] for r in records[(f"{c}/{s}", name)]) / 5
                       for c in ("fog", "pixelate") for s in (2, 5)]
        assert mean_corruption_error(errors[name]) == pytest.approx(100 * sum(per_setting) / 4)
    with pytest.raises(QuestbenchError, match="unknown corruption"):
        questbench.corruption_sweep(models, ds, ["rain"], quiet=True)
    with pytest.raises(QuestbenchError, match="'common', 'extra', 'all' or a list"):
        questbench.corruption_sweep(models, ds, "fogs", quiet=True)


@pytest.mark.parametrize("w, h", [(500, 375), (375, 500), (640, 427), (427, 640), (500, 333), (1024, 683),
                                  (301, 257), (256, 256)])
def test_faithful_view_is_torchvision_resize_and_center_crop(w, h):
    """The ImageNet-C pipeline: PIL image -> Resize(256) -> CenterCrop(224), pixel for pixel; the resized long
    side is truncated (640 x 427 -> 383 x 256, not 384)."""
    from PIL import Image
    from torchvision import transforms

    from questbench.data.transforms import center_crop_resize

    from questbench.evaluators.corruption_reference import prepare_image

    rng = np.random.default_rng(w * h)
    img = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    ref = np.asarray(transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])(Image.fromarray(img)))
    ours = prepare_image(img, "faithful")
    assert ours.shape == (224, 224, 3) and np.array_equal(ours, ref)
    assert np.array_equal(center_crop_resize(img, 256, 224), ref)
    if (w, h) == (640, 427):
        assert transforms.Resize(256)(Image.fromarray(img)).size == (383, 256)
