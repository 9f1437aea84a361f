"""Fashion-MNIST from IDX files.

Sources, first found wins: a folder the user gives; the Debian package ``dataset-fashion-mnist``
(/usr/share/datasets/fashion-mnist); torchvision's download (only with ``download=True``); and, for the
test split only, the copy shipped inside questbench so the default run needs nothing beyond pip.

Images are 28x28 gray. Models take them as they are (the model's own preprocessing resizes and adapts
channels); corruptions upsample to 32x32 first (see ``questbench.evaluators.corruptions``).
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Optional

from ..errors import QuestbenchError
from .arrays import ArrayDataset
from .idx import read_idx

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _find(folder: Path, stem: str) -> Optional[Path]:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def _candidate_dirs(root: Optional[Path], download: bool, split: str) -> list[tuple[str, Path]]:
    dirs: list[tuple[str, Path]] = []
    if root is not None:
        return [("user", Path(root)), ("user", Path(root) / "FashionMNIST" / "raw")]
    dirs.append(("debian", DEBIAN_DIR))
    if download:
        dirs.append(("torchvision", Path.home() / ".cache" / "questbench" / "FashionMNIST" / "raw"))
    if split == "test":
        dirs.append(("builtin", Path(str(resources.files("questbench.data").joinpath("fashion_mnist")))))
    return dirs


def _download(target: Path) -> None:
    try:
        from torchvision.datasets import FashionMNIST
        FashionMNIST(str(target.parent.parent), download=True)
    except Exception as exc:  # network errors come in many types
        raise QuestbenchError(f"Fashion-MNIST download failed: {str(exc).splitlines()[0]}") from None


def load_fashion_mnist(split: str = "test", root=None, download: bool = False) -> ArrayDataset:
    if split not in _FILES:
        raise QuestbenchError(f"Fashion-MNIST split must be 'train' or 'test', not {split!r}")
    img_stem, lbl_stem = _FILES[split]
    for source, folder in _candidate_dirs(root, download, split):
        if source == "torchvision" and _find(folder, img_stem) is None:
            _download(folder)
        img, lbl = _find(folder, img_stem), _find(folder, lbl_stem)
        if img and lbl:
            images, labels = read_idx(img), read_idx(lbl)
            if images.ndim != 3 or len(images) != len(labels):
                raise QuestbenchError(f"{img}: expected N x 28 x 28 images matching {len(labels)} labels")
            if len(images) == 0:
                raise QuestbenchError(f"{img} holds no images")
            ids = [f"{split}/{i:05d}" for i in range(len(images))]
            return ArrayDataset(images, labels, "fashion-mnist", f"{source}:{folder}", ids, CLASS_NAMES)
    if root is not None:
        raise QuestbenchError(f"no Fashion-MNIST {split} IDX files ({img_stem}[.gz], {lbl_stem}[.gz]) in {root}")
    raise QuestbenchError(f"Fashion-MNIST {split} split not found: `apt-get install dataset-fashion-mnist` "
                          f"(files in {DEBIAN_DIR}), pass a folder of the IDX files (--data-root), or, with a "
                          "network, --download (torchvision's copy)")
