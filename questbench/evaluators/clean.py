"""Clean accuracy: one record per sample (prediction, correct or not)."""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from .common import Spans, loaded_batches, predictions


@torch.inference_mode()
def evaluate_clean(model, ds, batch_size: int, device: str, advance: Optional[Callable[[int], None]] = None,
                   spans: Spans = None, num_workers: int = 0) -> list[dict[str, Any]]:
    records = []
    for start, stop, x in loaded_batches(ds, batch_size, device, spans, num_workers):
        idx = range(start, stop)
        pred = predictions(model(x)).cpu()
        for j, i in enumerate(idx):
            label = int(ds.labels[i])
            records.append({"sample_id": ds.sample_ids[i], "label": label, "pred": int(pred[j]),
                            "correct": bool(int(pred[j]) == label)})
        if advance:
            advance(len(idx))
    return records
