"""Helpers shared by evaluators: precision modes, explicit seeding, out-of-memory batch fallback."""
from __future__ import annotations

import contextlib
import hashlib
from typing import Any, Callable, Iterator, Optional, Sequence, TypeVar

import torch
import torch.nn as nn

from ..errors import QuestbenchError

T = TypeVar("T")
PRECISIONS = ("fp32", "bf16")


class NonFiniteLogits(QuestbenchError):
    """A model returned NaN or inf logits: argmax would read them as class 0, a prediction nobody made."""

    def __init__(self, who: str, bad: int, total: int):
        self.bad, self.total = bad, total
        super().__init__(f"{who} returned non-finite logits (NaN or inf) for {bad} of {total} images in a batch: "
                         "its predictions would be meaningless, so the job is not written")

    def named(self, who: str) -> "NonFiniteLogits":
        return NonFiniteLogits(who, self.bad, self.total)


# fields a record gains from the model's logits and the labels of its batch (one dict per sample): how a kind
# that reads more than the prediction (calibration: the probabilities) reuses an evaluator's batches
Extra = Callable[[torch.Tensor, torch.Tensor], list[dict[str, Any]]]


def predictions(logits: torch.Tensor, who: str = "the model") -> torch.Tensor:
    """argmax over classes, refusing non-finite logits (the job fails with one line; nothing is written)."""
    bad = ~torch.isfinite(logits.detach()).all(dim=1)
    if bool(bad.any()):
        raise NonFiniteLogits(who, int(bad.sum()), len(bad))
    return logits.argmax(1)


def derive_seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:4], "little")


@contextlib.contextmanager
def seeded(seed: int, device: str = "cpu") -> Iterator[None]:
    """Seed torch's generators for the block only; the caller's RNG state is restored afterwards."""
    devices = [torch.device(device).index or 0] if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class PrecisionWrapper(nn.Module):
    """Runs the model under bf16 autocast and returns float32 logits (opt-in); fp32 runs it as it is (on a GPU
    with TF32 matmuls inside a job's :func:`precision_scope`)."""

    def __init__(self, model: nn.Module, precision: str, device: str):
        super().__init__()
        if precision not in PRECISIONS:
            raise QuestbenchError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        self.model = model
        self.precision = precision
        self.device_type = torch.device(device).type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.precision == "bf16":
            with torch.autocast(self.device_type, dtype=torch.bfloat16):
                return self.model(x).float()
        return self.model(x)


def with_precision(model: nn.Module, precision: str, device: str) -> nn.Module:
    """``model`` as the suite's precision runs it: itself for fp32 (so nothing about an fp32 run changes), a
    :class:`PrecisionWrapper` for bf16."""
    return model if precision == "fp32" else PrecisionWrapper(model, precision, device)


def autocast_for(precision: str, device: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for a block that calls the model itself (diagnostics: its hooks keep the module names)."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")


@contextlib.contextmanager
def precision_scope(device: str) -> Iterator[None]:
    """One job's matmul precision: TF32 on a GPU (what fp32 means on a GPU here, as in timm's and RobustBench's
    GPU evaluations), then the caller's settings back exactly as they were: nothing leaks into the next job or
    into a user's process (``questbench.attack``)."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.get_float32_matmul_precision())
    try:
        if device.startswith("cuda"):
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        torch.set_float32_matmul_precision(saved[2])


def scoped(it, device: str) -> Iterator:
    """Items of ``it`` with each step of it (everything it runs until it yields) inside :func:`precision_scope`;
    the caller's code between items runs under its own settings."""
    it = iter(it)
    while True:
        with precision_scope(device):
            try:
                item = next(it)
            except StopIteration:
                return
        yield item


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def run_with_batch_fallback(fn: Callable[[int], T], batch_size: int, on_halve: Callable[[int], None] | None = None) -> T:
    """Call ``fn(batch_size)``; on an out-of-memory error halve the batch and go on, down to 1."""
    while True:
        try:
            return fn(batch_size)
        except RuntimeError as exc:
            if not _is_oom(exc) or batch_size == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            batch_size //= 2
            if on_halve:
                on_halve(batch_size)


def die_with_parent(worker_id: int | None = None) -> None:
    """Linux: this (child) process is killed when its parent dies, even by SIGKILL, instead of living on
    orphaned. Ctrl-C is left to the parent (a terminal sends it to every process of the group; the parent ends
    its children), and SIGTERM kills outright. Usable as a DataLoader ``worker_init_fn``."""
    import ctypes
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: daemon processes still end when the parent exits normally
        pass


def frozen(model: nn.Module, precision: str, device: str) -> nn.Module:
    """The model in eval mode under the suite's precision, its parameters out of autograd (attacks need only
    input gradients)."""
    wrapped = PrecisionWrapper(model, precision, device).eval()
    for p in wrapped.parameters():
        p.requires_grad_(False)
    return wrapped


Spans = Optional[Sequence[tuple[int, int]]]


def batch_starts(n: int, batch_size: int, spans: Spans = None) -> Iterator[tuple[int, int]]:
    """[start, stop) of each batch: ``batch_size`` samples at a time within each span (default: all n). A rank
    given some chunks of a job batches them exactly as one process running the whole job would."""
    for a, b in spans if spans is not None else [(0, n)]:
        for start in range(a, b, batch_size):
            yield start, min(start + batch_size, b)


def batches(dataset, batch_size: int, device: str, spans: Spans = None
            ) -> Iterator[tuple[int, list[int], torch.Tensor, torch.Tensor]]:
    """(start, indices, images, labels) for consecutive batches of ``dataset`` (within ``spans``), on ``device``."""
    for start, stop, x in loaded_batches(dataset, batch_size, device, spans):
        idx = list(range(start, stop))
        yield start, idx, x, torch.tensor([int(dataset.labels[i]) for i in idx], device=device)


class _Batches(torch.utils.data.Dataset):
    """Item k: batch k (images stacked) of a dataset; built inside a DataLoader worker when there are any."""

    def __init__(self, dataset, ranges: list[tuple[int, int]]):
        self.dataset, self.ranges = dataset, ranges

    def __len__(self) -> int:
        return len(self.ranges)

    def __getitem__(self, k: int):
        start, stop = self.ranges[k]
        try:
            return start, stop, torch.stack([self.dataset[i][0] for i in range(start, stop)])
        except QuestbenchError as exc:  # handed back as a value: DataLoader would re-raise it wrapped in a traceback
            return exc


def loaded_batches(dataset, batch_size: int, device: str, spans: Spans = None, num_workers: int = 0
                   ) -> Iterator[tuple[int, int, torch.Tensor]]:
    """(start, stop, images on ``device``) per batch, the batches of :func:`batch_starts`. Images are decoded in
    ``num_workers`` DataLoader workers and, for a GPU, handed over in pinned memory with a non-blocking copy,
    so that reading the next batch overlaps the model's work on this one."""
    cuda = device.startswith("cuda")
    loader = torch.utils.data.DataLoader(
        _Batches(dataset, list(batch_starts(len(dataset), batch_size, spans))), batch_size=None,
        num_workers=num_workers, pin_memory=cuda, worker_init_fn=die_with_parent if num_workers else None,
        prefetch_factor=2 if num_workers else None)
    for item in loader:
        if isinstance(item, QuestbenchError):
            raise item
        start, stop, x = item
        yield start, stop, x.to(device, non_blocking=cuda)
