"""The corruption grid: every (setting, sample) item of a sweep, made in DataLoader workers a batch piece at a time
and put together into model batches that never straddle two settings; every model sees each batch once."""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..config.settings import CorruptionSetting
from ..errors import QuestbenchError
from .common import Extra, die_with_parent, predictions
from .corruption_reference import MIN_SIDE, corrupt_image, corrupted_sample, prepare_image

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
                  on_batch: Optional[Callable[[int], None]] = None, engine: Optional[Callable] = None,
                  extra: Optional[Extra] = None) -> Iterator[tuple[CorruptionSetting, str, list[dict]]]:
    """Evaluate every model on every setting of the grid; each corrupted batch is generated once. ``extra``:
    fields each record gains from the model's logits (evaluators.common.Extra).

    Batches arrive in whatever order the workers finish them; yields (setting, model name, records in sample
    order) once a setting and all settings before it are complete, so the output does not depend on timing.
    """
    pending: dict[int, dict[str, list[tuple[int, dict]]]] = {}
    seen: dict[int, int] = {}
    next_setting = 0
    several = len(models) > 1
    with torch.inference_mode():
        for x, y, s_idx, i_idx in _grid_loader(grid, batch_size, num_workers):
            s = int(s_idx[0])
            slot = pending.setdefault(s, {name: [] for name in models})
            x = x.to(device)
            if engine is not None:
                x = engine(x, grid.settings[s], [sample_ids[int(i)] for i in i_idx])
            for name, model in models.items():
                # each model gets its own copy when several share the batch: one that edits its input in place
                # must not change what the next one sees (issue 36)
                logits = model(x.clone() if several else x)
                pred = predictions(logits, who=f"model {name} ({grid.settings[s].key})").cpu()
                more = extra(logits, y.to(logits.device)) if extra is not None else [{}] * len(y)
                slot[name].extend(
                    (int(i), {"sample_id": sample_ids[int(i)], "label": int(lbl), "pred": int(p),
                              "correct": bool(p == lbl), **m})
                    for i, lbl, p, m in zip(i_idx, y, pred, more))
            seen[s] = seen.get(s, 0) + len(y)
            if on_batch:
                on_batch(len(y))
            while seen.get(next_setting) == grid.n:
                for name, rows in pending.pop(next_setting).items():
                    yield grid.settings[next_setting], name, [r for _, r in sorted(rows, key=lambda t: t[0])]
                next_setting += 1
