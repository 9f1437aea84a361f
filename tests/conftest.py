import os

import numpy as np
import pytest
import torch

torch.set_num_threads(2)
os.environ.setdefault("MPLBACKEND", "Agg")

TINY = dict(arch="vit_tiny_patch16_224", num_classes=10, input_size=(1, 28, 28), mean=(0.5,), std=(0.5,),
            arch_kwargs=dict(patch_size=7, embed_dim=32, depth=2, num_heads=2))


def tiny_spec(attention="standard", **over):
    from questbench.models.build import ModelSpec
    return ModelSpec(attention=attention, **{**TINY, **over})


def make_tiny(attention="standard", seed=0, **over):
    from questbench.models.build import build_model
    torch.manual_seed(seed)
    return build_model(tiny_spec(attention, **over)).eval()


def write_tiny_pair(folder):
    """Two random tiny ViTs (standard and QUEST, same weights) saved with cards in ``folder``, plus a registry
    naming them; returns the registry's path."""
    from questbench.models.attention import set_attention
    from questbench.models.build import save_checkpoint

    std = make_tiny("standard", seed=0)
    save_checkpoint(std, folder / "tiny-std.safetensors")
    quest = make_tiny("standard", seed=0)
    set_attention(quest.net, "quest")
    quest.spec.attention = "quest"
    save_checkpoint(quest, folder / "tiny-quest.safetensors")
    reg = folder / "registry.toml"
    lines = []
    for name, kind, pair in (("tiny-std", "standard", "tiny-quest"), ("tiny-quest", "quest", "tiny-std")):
        lines += ["[[model]]", f'name = "{name}"', f'arch = "{TINY["arch"]}"', f'attention = "{kind}"',
                  f'source = "path:{name}.safetensors"', "num_classes = 10", "input_size = [1, 28, 28]",
                  "mean = [0.5]", "std = [0.5]", f'pair = "{pair}"',
                  'arch_kwargs = { patch_size = 7, embed_dim = 32, depth = 2, num_heads = 2 }', ""]
    reg.write_text("\n".join(lines))
    return reg


def write_suite(folder, registry, text):
    """A suite file in ``folder`` naming ``registry`` (top-level keys precede TOML tables)."""
    p = folder / "suite.toml"
    p.write_text(f'registry = ["{registry}"]\n' + text)
    return p


def processes_mentioning(text: str) -> list[str]:
    """Pids of the processes whose command line contains ``text``."""
    found = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                cmd = open(f"/proc/{p}/cmdline", "rb").read().decode(errors="replace")
            except OSError:
                continue
            if text in cmd:
                found.append(p)
    return found


def children(pid: int) -> list[str]:
    """Pids of the direct children of ``pid``."""
    kids = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                stat = open(f"/proc/{p}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(p)
    return kids


@pytest.fixture
def tiny_pair(tmp_path):
    """The registry of a tiny standard/QUEST pair written into the test's folder (``write_tiny_pair``)."""
    return write_tiny_pair(tmp_path)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
