"""ImageNet-C style corruptions: on the fly (imagecorruptions, the imaug fork) or from the released datasets.

Each corrupted image is a pure function of (suite seed, sample id, corruption, severity): a seed is derived
from those four and passed explicitly. glass_blur and impulse_noise take it as ``seed=``; the other
corruptions draw from numpy's global generator, which is seeded with the same value just for the call and
restored afterwards, so no corruption depends on state left by anything else.

Image policy (documented in the README):
- gray images are replicated to 3 channels (what imagecorruptions itself does); the corrupted image stays
  RGB and the model's preprocessing turns it back to gray with ITU-R 601 luma weights;
- images smaller than 32 px on a side (imagecorruptions' minimum) are upsampled, bilinear, so the short side
  is 32, then corrupted at that size; the model's preprocessing resizes to its own input size;
- non-square images are corrupted as they are (the imaug fork supports any size >= 32); an image folder, whose
  files differ in size, is corrupted in native mode on its eval view (resize 256, center crop 224 by default: what
  the model is shown), without the JPEG round trip;
- ``mode="faithful"`` reproduces how ImageNet-C was made: resize short side to 256, center-crop 224,
  corrupt, JPEG round trip at quality 85.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
from typing import Callable, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ..errors import QuestbenchError
from ..settings import CorruptionSetting, check_corruption  # noqa: F401  (re-exported)
from .common import die_with_parent, predictions

MIN_SIDE = 32
MODES = ("native", "faithful")
FAITHFUL_RESIZE, FAITHFUL_CROP, FAITHFUL_JPEG_QUALITY = 256, 224, 85
_TAKES_SEED = ("glass_blur", "impulse_noise")


def corruption_seed(suite_seed: int, sample_id: str, corruption: str, severity: int) -> int:
    digest = hashlib.sha256(f"{suite_seed}|{sample_id}|{corruption}|{severity}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


@contextlib.contextmanager
def _numpy_global_seed(seed: int):
    if torch.utils.data.get_worker_info() is not None:
        # a DataLoader worker of ours: nobody else draws from its global generator, and saving and restoring
        # that state costs about a tenth of a 32 px corruption
        np.random.seed(seed)
        yield
        return
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def corrupt_image(image: np.ndarray, corruption: str, severity: int, seed: int) -> np.ndarray:
    """imagecorruptions.corrupt with an explicit seed: same inputs, same output, whatever ran before."""
    from imagecorruptions import corrupt

    kwargs = {"seed": seed} if corruption in _TAKES_SEED else {}
    with _numpy_global_seed(seed):
        return corrupt(image, corruption_name=corruption, severity=severity, **kwargs)


def _to_rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return np.stack([image] * 3, axis=-1)
    if image.shape[-1] == 1:
        return np.repeat(image, 3, axis=-1)
    return image


def prepare_image(image: np.ndarray, mode: str = "native") -> np.ndarray:
    """uint8 HxW[xC] -> uint8 HxWx3 ready for imagecorruptions, per the module's image policy."""
    if mode not in MODES:
        raise QuestbenchError(f"corruption mode must be one of {MODES}, not {mode!r}")
    image = _to_rgb(image)
    h, w = image.shape[:2]
    if mode == "faithful":  # torchvision Resize(256) + CenterCrop(224), as make_imagenet_c.py did
        return center_crop_resize(image, FAITHFUL_RESIZE, FAITHFUL_CROP)
    if min(h, w) < MIN_SIDE:
        scale = MIN_SIDE / min(h, w)
        size = (max(MIN_SIDE, round(w * scale)), max(MIN_SIDE, round(h * scale)))
        return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    return image


def jpeg_round_trip(image: np.ndarray, quality: int = FAITHFUL_JPEG_QUALITY) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def corrupted_sample(image: np.ndarray, sample_id: str, corruption: str, severity: int, suite_seed: int,
                     mode: str = "native") -> np.ndarray:
    """The corrupted uint8 HxWx3 image for one sample: a pure function of its arguments."""
    check_corruption(corruption, severity)
    out = corrupt_image(prepare_image(image, mode), corruption, severity,
                        corruption_seed(suite_seed, sample_id, corruption, severity))
    return jpeg_round_trip(out) if mode == "faithful" else out


class CorruptionGrid:
    """Item ``s * n + i`` is sample i under setting s; :meth:`batch` builds a batch of items as uint8 arrays.

    ``source(setting, i)`` returns the uint8 corrupted image; on-the-fly and from-disk grids differ only
    in that function, and generation happens in DataLoader workers.
    """

    def __init__(self, settings: Sequence[CorruptionSetting], n: int, labels: Sequence[int],
                 source: Callable[[CorruptionSetting, int], np.ndarray]):
        self.settings = list(settings)
        self.n = n
        self.labels = labels
        self.source = source

    def __len__(self) -> int:
        return len(self.settings) * self.n

    def images(self, items: Sequence[int]) -> np.ndarray:
        """The corrupted images of the given items, stacked: uint8 NHWC."""
        images = [np.asarray(self.source(self.settings[s], i), dtype=np.uint8)
                  for s, i in (divmod(item, self.n) for item in items)]
        _check_same_size({im.shape for im in images})
        return np.stack(images)

    def targets(self, items: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(labels, setting indices, sample indices) of the given items; needs no image."""
        pos = [divmod(item, self.n) for item in items]
        return (torch.tensor([int(self.labels[i]) for _, i in pos], dtype=torch.int64),
                torch.tensor([s for s, _ in pos], dtype=torch.int64),
                torch.tensor([i for _, i in pos], dtype=torch.int64))


def _check_same_size(shapes) -> None:
    if len(set(shapes)) > 1:
        raise QuestbenchError(f"corrupted images of one batch differ in size ({', '.join(map(str, sorted(shapes)))}): "
                              "images of varying size need a fixed eval view (an image folder's resize/crop) "
                              "or mode \"faithful\"")


class OnTheFly:
    """Picklable source for DataLoader workers: corrupts dataset images on demand (``corrupt=False``: hands
    over the prepared clean image, for an engine that corrupts whole batches on the model's device)."""

    def __init__(self, dataset, suite_seed: int, mode: str, corrupt: bool = True):
        self.dataset = dataset
        self.suite_seed = suite_seed
        self.mode = mode
        self.corrupt = corrupt

    def __call__(self, setting: CorruptionSetting, i: int) -> np.ndarray:
        # native mode corrupts what the model is shown: an image folder's resize/crop view where it has one
        # (its files differ in size); faithful mode makes its own 256/224 view from the file, as ImageNet-C did
        view = getattr(self.dataset, "eval_view_uint8", None) if self.mode == "native" else None
        image = view(i) if view is not None else self.dataset.image_uint8(i)
        if not self.corrupt:
            return prepare_image(image, self.mode)
        return corrupted_sample(image, self.dataset.sample_ids[i], setting.corruption, setting.severity,
                                self.suite_seed, self.mode)


class TorchEngine:
    """Corrupts a model batch of prepared images (float NCHW in [0, 1], one setting) on its device with
    questbench.evaluators.torch_corruptions; each image's generator is seeded as imagecorruptions' seed is."""

    def __init__(self, suite_seed: int, params: str = "auto"):
        self.suite_seed = suite_seed
        self.params = params

    def __call__(self, x: torch.Tensor, setting: CorruptionSetting, sample_ids: Sequence[str]) -> torch.Tensor:
        from .torch_corruptions import corrupt_batch, generators, resolve_params

        seeds = [corruption_seed(self.suite_seed, sid, setting.corruption, setting.severity) for sid in sample_ids]
        params = resolve_params(self.params, min(x.shape[-2:]))
        return corrupt_batch(x.contiguous(), setting.corruption, setting.severity, generators(seeds, x.device), params)


def seen_images(dataset, indices: Sequence[int], setting: CorruptionSetting, suite_seed: int, mode: str = "native",
                engine: str = "imagecorruptions", params: str = "imagenet-c") -> list[np.ndarray]:
    """The corrupted images (uint8 HxWx3) the models were shown for these samples of an on-the-fly sweep: each
    image is a pure function of the seed, the sample and the setting, made by the same code as in the sweep."""
    if engine == "torch":
        prepared = np.stack([OnTheFly(dataset, suite_seed, mode, corrupt=False)(setting, i) for i in indices])
        x = torch.from_numpy(prepared).permute(0, 3, 1, 2).float().div_(255.0)
        y = TorchEngine(suite_seed, params)(x, setting, [dataset.sample_ids[i] for i in indices])
        # the model saw y as floats; shown as the nearest uint8 image
        return list((y.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    source = OnTheFly(dataset, suite_seed, mode)
    return [source(setting, i) for i in indices]


def _warm_up(settings: Sequence[CorruptionSetting]) -> None:
    """Compile glass_blur's numba kernel in this process first: forked workers inherit it instead of each
    spending seconds compiling their own copy."""
    if any(st.corruption == "glass_blur" for st in settings):
        corrupt_image(np.zeros((MIN_SIDE, MIN_SIDE, 3), np.uint8), "glass_blur", 1, 0)


class _GridPieces(Dataset):
    """Item k is one piece of a model batch, (batch id, offset, uint8 NHWC images), built inside one worker:
    one stack and one hand-over per piece instead of per image (at 32 px the per-image collation costs as much
    as the corruption itself)."""

    def __init__(self, grid: CorruptionGrid, pieces: list[tuple[int, int, list[int]]]):
        self.grid = grid
        self.pieces = pieces

    def __len__(self) -> int:
        return len(self.pieces)

    def __getitem__(self, k: int):
        # numpy, uint8: pickled through the worker's pipe in one piece; torch tensors would each go through a
        # shared-memory file handle, which at 32 px costs the main process more than the images themselves
        b, offset, items = self.pieces[k]
        try:
            return b, offset, self.grid.images(items)
        except QuestbenchError as exc:  # handed back as a value: DataLoader would re-raise it wrapped in a traceback
            return b, offset, exc


def _unchanged(piece):
    return piece  # keeps DataLoader from turning the numpy arrays into shared-memory tensors in the worker


_PREFETCH = 2  # pieces queued per worker: enough to keep it busy, few enough that the last ones spread evenly
_TAIL_SPLIT = 4  # the last batches go out in this many pieces each, so no worker idles while another finishes


def _pieces(batches: list[list[int]], num_workers: int) -> list[tuple[int, int, list[int]]]:
    """Whole batches, except the last few, which are cut into pieces (guided scheduling): with work handed
    out a piece at a time, a worker can only be left alone at the end with its last queued pieces."""
    tail = len(batches) - num_workers * _PREFETCH * 2
    out = []
    for b, items in enumerate(batches):
        step = len(items) if b < tail else -(-len(items) // _TAIL_SPLIT)
        out.extend((b, o, items[o:o + step]) for o in range(0, len(items), step))
    return out


@contextlib.contextmanager
def _opencv_single_threaded():
    """OpenCV (used by several corruptions) runs a thread per core in every process; with one worker per core
    those threads only fight each other. Set before the workers fork (setting it inside a forked child can
    deadlock OpenCV's pool) and restored afterwards."""
    try:
        import cv2
    except ImportError:  # pragma: no cover - opencv comes with imagecorruptions
        yield
        return
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def _grid_loader(grid: CorruptionGrid, batch_size: int, num_workers: int) -> Iterator:
    """Yields (x float NCHW in [0, 1], labels, setting indices, sample indices) per model batch. Batches are
    the same whatever the worker count (never straddling two settings, so each maps to one corruption and
    severity); only the order they arrive in may differ."""
    batches = [list(range(s * grid.n + b, s * grid.n + min(b + batch_size, grid.n)))
               for s in range(len(grid.settings)) for b in range(0, grid.n, batch_size)]
    pieces = _pieces(batches, num_workers) if num_workers else [(b, 0, items) for b, items in enumerate(batches)]
    # in_order=False: a worker stuck on a slow piece (zoom_blur at 224 px) does not idle the other one
    loader = DataLoader(_GridPieces(grid, pieces), batch_size=None, collate_fn=_unchanged, num_workers=num_workers,
                        persistent_workers=False, prefetch_factor=_PREFETCH if num_workers else None,
                        in_order=not num_workers, worker_init_fn=die_with_parent if num_workers else None)
    if num_workers and getattr(grid.source, "corrupt", False):
        _warm_up(grid.settings)
    filling: dict[int, tuple[torch.Tensor, int]] = {}  # batch id -> (x being filled, images still missing)
    with _opencv_single_threaded() if num_workers else contextlib.nullcontext():
        for b, offset, images in loader:
            if isinstance(images, QuestbenchError):
                raise images
            if b not in filling:
                _, h, w, c = images.shape
                filling[b] = (torch.empty(len(batches[b]), c, h, w, memory_format=torch.channels_last),
                              len(batches[b]))
            x, missing = filling[b]
            _check_same_size({(x.shape[2], x.shape[3], x.shape[1]), images.shape[1:]})  # HWC, as the pieces
            # copy then divide in place: bit for bit .float().div_(255); torch.div(uint8, out=float) is 2x slower
            x[offset:offset + len(images)].copy_(torch.from_numpy(images).permute(0, 3, 1, 2)).div_(255.0)
            filling[b] = (x, missing - len(images))
            if missing == len(images):
                del filling[b]
                yield (x, *grid.targets(batches[b]))


def evaluate_grid(models: Mapping[str, torch.nn.Module], grid: CorruptionGrid, sample_ids: Sequence[str],
                  batch_size: int = 128, num_workers: int = 2, device: str = "cpu",
                  on_batch: Optional[Callable[[int], None]] = None, engine: Optional[TorchEngine] = None
                  ) -> Iterator[tuple[CorruptionSetting, str, list[dict]]]:
    """Evaluate every model on every setting of the grid; each corrupted batch is generated once.

    Batches arrive in whatever order the workers finish them; yields (setting, model name, records in sample
    order) once a setting and all settings before it are complete, so the output does not depend on timing.
    """
    pending: dict[int, dict[str, list[tuple[int, dict]]]] = {}
    seen: dict[int, int] = {}
    next_setting = 0
    with torch.inference_mode():
        for x, y, s_idx, i_idx in _grid_loader(grid, batch_size, num_workers):
            s = int(s_idx[0])
            slot = pending.setdefault(s, {name: [] for name in models})
            x = x.to(device)
            if engine is not None:
                x = engine(x, grid.settings[s], [sample_ids[int(i)] for i in i_idx])
            for name, model in models.items():
                pred = predictions(model(x), who=f"model {name} ({grid.settings[s].key})").cpu()
                slot[name].extend(
                    (int(i), {"sample_id": sample_ids[int(i)], "label": int(lbl), "pred": int(p),
                              "correct": bool(p == lbl)})
                    for i, lbl, p in zip(i_idx, y, pred))
            seen[s] = seen.get(s, 0) + len(y)
            if on_batch:
                on_batch(len(y))
            while seen.get(next_setting) == grid.n:
                for name, rows in pending.pop(next_setting).items():
                    yield grid.settings[next_setting], name, [r for _, r in sorted(rows, key=lambda t: t[0])]
                next_setting += 1


def evaluate_corruptions(models: Mapping[str, torch.nn.Module], dataset, settings: Sequence[CorruptionSetting],
                         suite_seed: int = 0, mode: str = "native", engine: str = "imagecorruptions",
                         params: str = "imagenet-c", **kwargs):
    """On-the-fly corruption sweep of ``dataset`` (anything with image_uint8, sample_ids, labels), by
    imagecorruptions in DataLoader workers or by the batched torch engine on the models' device."""
    for st in settings:
        check_corruption(st.corruption, st.severity)
    if engine not in ("imagecorruptions", "torch"):
        raise QuestbenchError(f"corruption engine must be imagecorruptions or torch, not {engine!r}")
    if engine == "torch" and mode != "native":
        raise QuestbenchError("the torch corruption engine runs in mode \"native\" only")
    torch_engine = TorchEngine(suite_seed, params) if engine == "torch" else None
    grid = CorruptionGrid(settings, len(dataset), dataset.labels,
                          OnTheFly(dataset, suite_seed, mode, corrupt=torch_engine is None))
    return evaluate_grid(models, grid, dataset.sample_ids, engine=torch_engine, **kwargs)


def corruption_errors(models: Mapping[str, torch.nn.Module], dataset, corruptions: Sequence[str],
                      severities: Sequence[int] = (1, 2, 3, 4, 5), suite_seed: int = 0, mode: str = "native",
                      quiet: bool = False, **kwargs) -> dict[str, dict[str, list[float]]]:
    """On-the-fly sweep reduced to {model: {corruption: [error at each severity]}} (fractions), the mapping
    questbench.metrics.mce and mean_corruption_error take. Shows a progress bar unless quiet."""
    from ..progress import progress_bar

    settings = [CorruptionSetting(c, s) for c in corruptions for s in severities]
    for st in settings:
        check_corruption(st.corruption, st.severity)
    errors = {name: {c: [0.0] * len(severities) for c in corruptions} for name in models}
    with progress_bar(quiet) as bar:
        task = bar.add_task("corruptions", total=len(settings) * len(dataset) * len(models))
        sweep = evaluate_corruptions(models, dataset, settings, suite_seed, mode,
                                     on_batch=lambda n: bar.advance(task, n * len(models)), **kwargs)
        for st, name, records in sweep:
            errors[name][st.corruption][list(severities).index(st.severity)] = (
                1.0 - sum(r["correct"] for r in records) / len(records))
    return errors


def center_crop_resize(image: np.ndarray, resize: int, crop: int) -> np.ndarray:
    """Short side to ``resize``, then center crop ``crop`` x ``crop``: torchvision's ``Resize(resize)`` and
    ``CenterCrop(crop)`` on a PIL image (bilinear, the long side truncated, the crop offset rounded), exactly the
    transform that made ImageNet-C and that ImageNet evaluation uses."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    pil = TF.resize(Image.fromarray(_to_rgb(image)), resize, interpolation=InterpolationMode.BILINEAR)
    return np.asarray(TF.center_crop(pil, crop))


def evaluate_released(models: Mapping[str, torch.nn.Module], source: Callable, labels: Sequence[int],
                      sample_ids: Sequence[str], settings: Sequence[CorruptionSetting], **kwargs):
    """Sweep over a released corrupted dataset (ImageNet-C tree or CIFAR-C arrays) through a grid source."""
    grid = CorruptionGrid(settings, len(sample_ids), labels, source)
    return evaluate_grid(models, grid, sample_ids, **kwargs)
