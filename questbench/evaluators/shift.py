"""Clean accuracy on a distribution-shift test set under its published protocol: logits masked to the
dataset's classes (ImageNet-A, -R), or a prediction counted correct when it is in the image's label set
(ImageNet-ReaL)."""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from ..errors import QuestbenchError
from .common import Extra, Spans, loaded_batches, predictions


@torch.inference_mode()
def evaluate_shift(model, ds, batch_size: int, device: str,
                   advance: Optional[Callable[[int], None]] = None, spans: Spans = None,
                   num_workers: int = 0, extra: Optional[Extra] = None) -> list[dict[str, Any]]:
    mask = getattr(ds, "class_mask", None)
    sets = getattr(ds, "label_sets", None)
    records = []
    for start, stop, x in loaded_batches(ds, batch_size, device, spans, num_workers):
        idx = range(start, stop)
        logits = model(x)
        predictions(logits)  # refuses NaN / inf before the mask adds its own -inf
        if mask is not None:
            if logits.shape[1] != len(mask):
                raise QuestbenchError(f"{ds.name} needs 1000-way ImageNet logits; the model gives {logits.shape[1]}")
            logits = logits.masked_fill(~torch.as_tensor(mask, device=logits.device), float("-inf"))
        pred = logits.argmax(1).cpu().tolist()
        labels = [int(ds.labels[i]) for i in idx]
        more = extra(logits, torch.tensor(labels, device=logits.device)) if extra is not None else [{}] * len(idx)
        for j, i in enumerate(idx):
            label = labels[j]
            rec = {"sample_id": ds.sample_ids[i], "label": label, "pred": pred[j], **more[j]}
            if sets is not None:
                rec["correct"] = pred[j] in sets[i]
                rec["real_labels"] = list(sets[i])
            else:
                rec["correct"] = pred[j] == label
            records.append(rec)
        if advance:
            advance(len(idx))
    return records
