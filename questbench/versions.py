"""Library versions recorded in every result and card."""
from __future__ import annotations

from importlib import metadata


def package_version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def library_versions() -> dict[str, str]:
    import platform

    return {
        "questbench": package_version("questbench"),
        "python": platform.python_version(),
        "torch": package_version("torch"),
        "timm": package_version("timm"),
        "numpy": package_version("numpy"),
        "torchattacks": package_version("torchattacks"),
        "pyautoattack": package_version("pyautoattack"),
        "imagecorruptions": package_version("imagecorruptions-imaug"),
    }
