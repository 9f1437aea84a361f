"""Datasets, one module per on-disk layout. Every dataset yields (float CHW tensor in [0, 1], int label)."""
from __future__ import annotations

from .arrays import ArrayDataset
from .fashion_mnist import load_fashion_mnist


def load_dataset(name: str, split: str = "test", root=None, download: bool = False, **kwargs) -> ArrayDataset:
    """Load a dataset by name. ``fashion-mnist`` is built in; other layouts load through their own modules."""
    from ..errors import QuestbenchError

    key = name.lower().replace("_", "-")
    if key in ("fashion-mnist", "fmnist"):
        return load_fashion_mnist(split=split, root=root, download=download)
    if key in ("cifar10-c", "cifar100-c", "cifar-10-c", "cifar-100-c"):
        from .cifar_c import load_cifar_c_clean
        return load_cifar_c_clean(root, **kwargs)
    if key in ("imagefolder", "imagenet"):
        from .imagefolder import load_image_folder
        return load_image_folder(root, **kwargs)
    raise QuestbenchError(f"unknown dataset {name!r}; known: fashion-mnist, imagenet (ImageFolder), cifar10-c")


__all__ = ["ArrayDataset", "load_dataset", "load_fashion_mnist"]
