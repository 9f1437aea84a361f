"""Clean accuracy: one record per sample (prediction, correct or not)."""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from .common import Extra, Spans, loaded_batches, predictions


@torch.inference_mode()
def evaluate_clean(model, ds, batch_size: int, device: str, advance: Optional[Callable[[int], None]] = None,
                   spans: Spans = None, num_workers: int = 0, extra: Optional[Extra] = None) -> list[dict[str, Any]]:
    """One record per sample of ``spans`` (all of ``ds`` by default); ``extra``: fields each record gains from
    the logits."""
    records = []
    for start, stop, x in loaded_batches(ds, batch_size, device, spans, num_workers):
        idx = range(start, stop)
        logits = model(x)
        pred = predictions(logits).cpu()
        labels = [int(ds.labels[i]) for i in idx]
        more = extra(logits, torch.tensor(labels, device=logits.device)) if extra is not None else [{}] * len(idx)
        for j, i in enumerate(idx):
            records.append({"sample_id": ds.sample_ids[i], "label": labels[j], "pred": int(pred[j]),
                            "correct": bool(int(pred[j]) == labels[j]), **more[j]})
        if advance:
            advance(len(idx))
    return records
