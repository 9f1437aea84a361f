"""The small-data training recipe that made the built-in zoo (timm-style, seeded, same data order per seed).

AdamW, linear warmup then cosine decay, label smoothing, light augmentation (random translation by up to
``translate`` pixels with zero padding, horizontal flip). Two models trained with the same seed see the same
initialization draw for shared parameters, the same batches and the same augmentation: they differ only in
their attention kind.
"""
from __future__ import annotations

import io
import json
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
import torch.nn.functional as F

from ..data import load_dataset
from ..data.arrays import ArrayDataset
from .._io import safe_name
from ..errors import QuestbenchError
from .._io import atomic_write_bytes
from .attention import fuse_where_it_pays
from .build import ModelSpec, QuestbenchModel, build_model, save_checkpoint
from ..progress import progress_bar
from ..versions import library_versions

# The built-in Fashion-MNIST ViT: a conv stem turns 28x28 into 7x7 tokens, then 4 pre-norm blocks of width 96
# (3 heads of 32), average-pooled tokens. The conv stem makes a ViT this small learn in a few CPU epochs.
FMNIST_SPEC = dict(arch="vit_convstem_tiny", num_classes=10, input_size=(1, 28, 28), mean=(0.2860,),
                   std=(0.3530,), arch_kwargs=dict(embed_dim=96, depth=4, num_heads=3, global_pool="avg"))


@dataclass
class Recipe:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    label_smoothing: float = 0.1
    translate: int = 1
    hflip: bool = True
    seed: int = 0
    train_limit: Optional[int] = None  # use only the first N training images (tests, smoke runs)
    # float32 everywhere (the zoo: TF32 off on a GPU too, so a GPU run follows the CPU arithmetic), or bf16
    # autocast on a GPU. Recorded in the card; a checkpoint resumes only under the recipe that wrote it.
    precision: str = "float32"


def _augment(x: torch.Tensor, recipe: Recipe, gen: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    if recipe.translate:
        t = recipe.translate
        padded = F.pad(x, (t, t, t, t))
        dy = torch.randint(0, 2 * t + 1, (n,), generator=gen)
        dx = torch.randint(0, 2 * t + 1, (n,), generator=gen)
        rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).view(n, 1, h, 1).expand(n, x.shape[1], h, w)
        cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).view(n, 1, 1, w).expand(n, x.shape[1], h, w)
        x = padded[torch.arange(n).view(n, 1, 1, 1), torch.arange(x.shape[1]).view(1, -1, 1, 1), rows, cols]
    if recipe.hflip:
        flip = torch.rand(n, generator=gen) < 0.5
        x = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)
    return x


def _lr_at(step: int, total: int, warmup: int, recipe: Recipe) -> float:
    if step < warmup:
        return recipe.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return recipe.lr * (recipe.min_lr_ratio + (1 - recipe.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def evaluate_accuracy(model: torch.nn.Module, data: ArrayDataset, batch_size: int = 512,
                      device: str = "cpu") -> float:
    model.eval()
    correct = 0
    x_all = torch.from_numpy(data.images)
    y_all = torch.from_numpy(data.labels)
    for i in range(0, len(data), batch_size):
        x = x_all[i:i + batch_size].to(device).float().div_(255)
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
        correct += int((model(x).argmax(1).cpu() == y_all[i:i + batch_size]).sum())
    return correct / len(data)


def train(spec: ModelSpec, recipe: Recipe, train_data: ArrayDataset, test_data: ArrayDataset,
          device: str = "cpu", quiet: bool = False, checkpoint: Optional[Path] = None, resume: bool = False,
          on_epoch_end: Optional[Callable[[int], None]] = None) -> tuple[QuestbenchModel, dict[str, Any]]:
    """Train ``spec`` with ``recipe``. With ``checkpoint``, the full training state (model, optimizer, data-order
    and augmentation generator, torch RNG, epoch) is written there atomically after every epoch; with ``resume``
    a run continues from it (same spec, recipe and training set only) to the weights an uninterrupted run gives.
    An existing checkpoint without ``resume`` is refused rather than overwritten."""
    if recipe.precision not in ("float32", "bf16"):
        raise QuestbenchError(f"recipe precision {recipe.precision!r}: use float32 or bf16")
    if recipe.precision == "bf16" and not device.startswith("cuda"):
        raise QuestbenchError("recipe precision bf16 needs a CUDA device (bf16 autocast on a GPU)")
    torch.manual_seed(recipe.seed)
    model = build_model(spec).to(device)
    fuse_where_it_pays(model, device)
    images = torch.from_numpy(train_data.images[: recipe.train_limit])
    labels = torch.from_numpy(train_data.labels[: recipe.train_limit])
    n = len(images)
    steps_per_epoch = math.ceil(n / recipe.batch_size)
    total = steps_per_epoch * recipe.epochs
    warmup = int(recipe.warmup_epochs * steps_per_epoch)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith(("pos_embed", "cls_token")) else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr)
    gen = torch.Generator().manual_seed(recipe.seed)  # data order and augmentation: independent of attention
    identity = {"spec": spec.model_dump(), "recipe": asdict(recipe), "train_sha256": train_data.sha256()}
    first_epoch, wall_before = 0, 0.0
    if checkpoint is not None and Path(checkpoint).exists():
        if not resume:
            raise QuestbenchError(f"a training checkpoint {checkpoint} exists: pass --resume to continue it, "
                                  f"or delete it to start over")
        first_epoch, wall_before = _load_training_state(Path(checkpoint), identity, model, opt, gen, device)
    use_bf16 = recipe.precision == "bf16"
    start = time.perf_counter()
    step = first_epoch * steps_per_epoch
    with progress_bar(quiet) as bar, float32_matmuls(device):
        task = bar.add_task(f"train {spec.attention} seed {recipe.seed}", total=total, completed=step,
                            unit="steps")
        for epoch in range(first_epoch, recipe.epochs):
            model.train()
            order = torch.randperm(n, generator=gen)
            for b in range(steps_per_epoch):
                idx = order[b * recipe.batch_size:(b + 1) * recipe.batch_size]
                x = images[idx].float().div_(255)
                x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
                x = _augment(x, recipe, gen).to(device, non_blocking=True)
                y = labels[idx].to(device, non_blocking=True)
                for group in opt.param_groups:
                    group["lr"] = _lr_at(step, total, warmup, recipe)
                with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_bf16):
                    loss = F.cross_entropy(model(x), y, label_smoothing=recipe.label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                bar.update(task, advance=1, description=f"train {spec.attention} s{recipe.seed} "
                                                        f"ep {epoch + 1}/{recipe.epochs} loss {loss.item():.3f}")
            if checkpoint is not None:
                _save_training_state(Path(checkpoint), identity, epoch + 1, model, opt, gen,
                                     wall_before + time.perf_counter() - start)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1)
    wall = wall_before + time.perf_counter() - start
    acc = evaluate_accuracy(model, test_data, device=device)
    card = {
        "recipe": asdict(recipe), "train_data": {"name": train_data.name, "images": n,
                                                  "sha256": train_data.sha256(), "source": train_data.source},
        "test_data": {"name": test_data.name, "images": len(test_data), "sha256": test_data.sha256()},
        "epochs": recipe.epochs, "test_top1": acc, "train_wall_s": round(wall, 2), "device": _device_name(device),
        "versions": library_versions(),
        "params": sum(p.numel() for p in model.parameters()),
    }
    if first_epoch:
        card["resumed_from_epoch"] = first_epoch
    model.card = card
    return model.cpu().eval(), card


@contextmanager
def float32_matmuls(device: str) -> Iterator[None]:
    """Full float32 matmuls and convolutions while training on a GPU (TF32 off), the previous state restored."""
    if not device.startswith("cuda"):
        yield
        return
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.get_float32_matmul_precision())
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        torch.set_float32_matmul_precision(saved[2])


def _save_training_state(path: Path, identity: dict, epoch: int, model: torch.nn.Module,
                         opt: torch.optim.Optimizer, gen: torch.Generator, wall_s: float) -> None:
    state = {"identity": json.dumps(identity, sort_keys=True), "epoch": epoch, "wall_s": wall_s,
             "model": model.state_dict(), "optimizer": opt.state_dict(), "generator": gen.get_state(),
             "torch_rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def _load_training_state(path: Path, identity: dict, model: torch.nn.Module, opt: torch.optim.Optimizer,
                         gen: torch.Generator, device: str) -> tuple[int, float]:
    try:
        # weights_only: tensors, dicts, numbers and strings are all a training state holds
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # a truncated or foreign file: one line, the user decides whether to delete it
        raise QuestbenchError(f"training checkpoint {path} cannot be read ({type(exc).__name__}); "
                              f"delete it to start over") from None
    if state.get("identity") != json.dumps(identity, sort_keys=True):
        raise QuestbenchError(f"training checkpoint {path} was written by another model spec, recipe or "
                              f"training set; delete it or choose another --checkpoint")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    gen.set_state(state["generator"].cpu())
    torch.set_rng_state(state["torch_rng"].cpu())
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
    return int(state["epoch"]), float(state["wall_s"])


def _device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    import platform
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def train_fmnist(attention: str, seed: int, out: Path, epochs: int = 10, device: str = "cpu",
                 data_root=None, train_limit: Optional[int] = None, quiet: bool = False,
                 name: Optional[str] = None, fp16: bool = True, download: bool = False,
                 resume: bool = False, **recipe_overrides) -> dict[str, Any]:
    """Train one built-in-recipe model into ``out``. Its training state lives in ``out/<name>.train-state.pt``
    while it trains (every epoch; ``resume`` continues it) and is removed once the checkpoint is written."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise QuestbenchError(f"--epochs must be a positive integer, not {epochs!r}")
    if train_limit is not None and (isinstance(train_limit, bool) or not isinstance(train_limit, int)
                                    or train_limit < 1):
        raise QuestbenchError(f"--train-limit must be a positive integer, not {train_limit!r}")
    spec = ModelSpec(attention=attention, **FMNIST_SPEC)
    recipe = Recipe(epochs=epochs, seed=seed, train_limit=train_limit, **recipe_overrides)
    name = name or f"fmnist-vit-{attention.replace('_', '')}-s{seed}"
    if safe_name(name) != name:  # the name becomes the file name: never a path, a hidden file or a link's target
        raise QuestbenchError(f"--name {name!r} is not a plain name (letters, digits and ._+=- only, not starting "
                              f"with a dot); for example {safe_name(name)!r}")
    # the user's arguments are checked before the data are looked for: a bad name is refused on any machine
    train_data = load_dataset("fashion-mnist", "train", root=data_root, download=download)
    test_data = load_dataset("fashion-mnist", "test", root=data_root, download=download)
    state = Path(out) / f"{name}.train-state.pt"
    model, card = train(spec, recipe, train_data, test_data, device=device, quiet=quiet, checkpoint=state,
                        resume=resume)
    card["name"] = name
    saved = save_checkpoint(model, Path(out) / f"{name}.safetensors", card,
                            dtype=torch.float16 if fp16 else torch.float32)
    state.unlink(missing_ok=True)
    return saved
