"""Thumbnails of the images behind a discordant cell, as the models saw them: the clean test image, or the
corrupted one where the run made it on the fly (a pure function of the suite seed, the sample and the setting,
remade here by the sweep's own code). Adversarial images depend on their batch and are not stored: their cells
show the clean image and name the attack. Needs the run's dataset on this machine; imports torch (the data and
corruption layers do), so only the html page with images loads it."""
from __future__ import annotations

import base64
import io
from typing import Optional

import numpy as np

from ..errors import QuestbenchError
from ..store.results import Results


class Thumbnails:
    """PNG data URIs keyed by (sample id, view); each image made once however many cells show it."""

    def __init__(self, results: Results):
        from ..data import load_dataset
        from ..config.suite import DataSpec
        p = results.run
        data = p.suite.data
        spec = DataSpec(**{k: data.get(k) for k in ("dataset", "split", "root", "samples", "classes")})
        try:
            self.dataset = load_dataset(spec.dataset, spec.split, root=spec.root, **spec.loader_kwargs())
        except QuestbenchError as exc:
            raise QuestbenchError(f"the images need the run's dataset: {exc}") from None
        self.index = {sid: i for i, sid in enumerate(self.dataset.sample_ids)}
        self.corruptions = p.suite.corruptions or {}
        self.seed = p.seed
        self.uris: dict[tuple, str] = {}
        self.bytes = 0

    @property
    def class_names(self) -> Optional[list[str]]:
        return getattr(self.dataset, "class_names", None)

    def on_the_fly(self) -> bool:
        return self.corruptions.get("mode", "native") in ("native", "faithful")

    def add(self, sample_ids: list[str], view: tuple) -> list[str]:
        """Data URIs for these samples under ``view`` (("clean",) or ("corruption", name, severity))."""
        keys = [(sid, view) for sid in sample_ids]
        todo = [k for k in dict.fromkeys(keys) if k not in self.uris]
        missing = [sid for sid, _ in todo if sid not in self.index]
        if missing:
            raise QuestbenchError(f"sample {missing[0]} of the results is not in the dataset found here")
        if todo:
            idx = [self.index[sid] for sid, _ in todo]
            for key, image in zip(todo, self._images(idx, view)):
                self.uris[key] = _png_uri(image)
                self.bytes += len(self.uris[key])
        return [self.uris[k] for k in keys]

    def _images(self, idx: list[int], view: tuple) -> list[np.ndarray]:
        if view[0] == "corruption" and self.on_the_fly():
            from ..evaluators.corruptions import seen_images
            from ..config.settings import CorruptionSetting
            c = self.corruptions
            return seen_images(self.dataset, idx, CorruptionSetting(view[1], view[2]), self.seed,
                               c.get("mode", "native"), c.get("engine", "imagecorruptions"),
                               c.get("params") or "imagenet-c")
        view_of = getattr(self.dataset, "eval_view_uint8", None)
        return [view_of(i) if view_of is not None else self.dataset.image_uint8(i) for i in idx]


def _png_uri(image: np.ndarray) -> str:
    from PIL import Image
    image = np.asarray(image, dtype=np.uint8)
    if image.ndim == 3 and (image == image[..., :1]).all():  # gray shown as RGB (e.g. a corrupted Fashion-MNIST
        image = image[..., 0]                                # image): the same pixels in a third of the bytes
    img = Image.fromarray(image)
    if max(img.size) > 96:  # a thumbnail, not the full image
        img.thumbnail((96, 96))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
