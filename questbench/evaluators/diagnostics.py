"""Attention diagnostics on clean inputs: per layer, attention entropy and query/key norm statistics over all
samples of the set (one forward pass, so the statistics are over the whole set, not per sample)."""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch


@torch.inference_mode()
def evaluate_diagnostics(model, ds, device: str, advance: Optional[Callable[[int], None]] = None
                         ) -> list[dict[str, Any]]:
    from ..models.attention import record_attention

    x = torch.stack([ds[i][0] for i in range(len(ds))]).to(device)
    with record_attention(model) as stats:
        model(x)
    if advance:
        advance(len(ds))
    return [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in vars(st).items()} for st in stats]
