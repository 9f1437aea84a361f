"""Library versions recorded in every result and card."""
from __future__ import annotations

import importlib.util
import re
from importlib import metadata
from pathlib import Path


def package_version(dist: str, module: str | None = None) -> str:
    """The installed distribution's version; else, for a module importable without package metadata (a source
    checkout or a folder on PYTHONPATH), the ``__version__`` its ``__init__.py`` declares, marked as such."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        pass
    spec = importlib.util.find_spec(module or dist.replace("-", "_"))
    if spec is not None and spec.origin and spec.origin.endswith(".py"):
        m = re.search(r"""^__version__\s*=\s*['"]([^'"]+)['"]""", Path(spec.origin).read_text(), re.M)
        if m:
            return f"{m.group(1)} (source, no package metadata)"
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
        "imagecorruptions": package_version("imagecorruptions-imaug", "imagecorruptions"),
    }
