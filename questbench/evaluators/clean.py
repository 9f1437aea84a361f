"""Clean accuracy: one record per sample (prediction, correct or not)."""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from .common import Spans, batch_starts


@torch.inference_mode()
def evaluate_clean(model, ds, batch_size: int, device: str, advance: Optional[Callable[[int], None]] = None,
                   spans: Spans = None) -> list[dict[str, Any]]:
    records = []
    for start, stop in batch_starts(len(ds), batch_size, spans):
        idx = range(start, stop)
        pred = model(torch.stack([ds[i][0] for i in idx]).to(device)).argmax(1).cpu()
        for j, i in enumerate(idx):
            label = int(ds.labels[i])
            records.append({"sample_id": ds.sample_ids[i], "label": label, "pred": int(pred[j]),
                            "correct": bool(int(pred[j]) == label)})
        if advance:
            advance(len(idx))
    return records
