"""Copy trained Fashion-MNIST checkpoints into questbench/zoo and write its registry.toml.

    python tools/build_zoo.py /path/to/trained/checkpoints

Copies each ``fmnist-vit-<kind>-s<seed>.safetensors`` + card from that folder into the zoo (models already there
stay), then for every zoo model whose card lacks them (or whose file changed): records the accuracy of the
shipped (fp16) file on the first 1,000 test images (the regression value tests check) and on all 10,000; and
pairs each non-standard model with the standard one of the same seed. The timm pretrained entries come from zoo/timm.toml.part.
"""
from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import questbench
from questbench._io import file_sha256
from questbench.models.build import card_path, load_checkpoint
from questbench.models.train import evaluate_accuracy

ZOO = Path(__file__).resolve().parents[1] / "questbench" / "zoo"
SLICE = 1000


def toml_value(v) -> str:
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    return repr(v)


def main(src: Path) -> None:
    test = questbench.load_dataset("fashion-mnist", "test")
    entries = []
    for f in sorted(src.glob("fmnist-vit-*.safetensors")):
        if re.match(r"fmnist-vit-(\w+)-s(\d+)$", f.stem):
            shutil.copy2(f, ZOO / f.name)
            shutil.copy2(card_path(f), card_path(ZOO / f.name))
    for f in sorted(ZOO.glob("fmnist-vit-*.safetensors")):
        m = re.match(r"fmnist-vit-(\w+)-s(\d+)$", f.stem)
        card = json.loads(card_path(f).read_text())
        if "slice_top1" not in card or "shipped_test_top1" not in card or card.get("sha256") != file_sha256(f):
            # measured once per shipped file: a model already in the zoo keeps its card as it is
            model = load_checkpoint(ZOO / f.name)
            card["slice_top1"] = {"images": f"test[0:{SLICE}]",
                                  "top1": evaluate_accuracy(model, test.subset(range(SLICE)))}
            card["shipped_test_top1"] = evaluate_accuracy(model, test)
            card_path(ZOO / f.name).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
        spec = card["spec"]
        kind, seed = spec["attention"], m.group(2)
        pair = f"fmnist-vit-standard-s{seed}" if kind != "standard" else f"fmnist-vit-quest-s{seed}"
        entries.append({"name": f.stem, "arch": spec["arch"], "attention": kind, "source": f"builtin:{f.name}",
                        "sha256": file_sha256(ZOO / f.name), "pair": pair, "dataset": "fashion-mnist",
                        "num_classes": spec["num_classes"], "input_size": spec["input_size"], "mean": spec["mean"],
                        "std": spec["std"], "interpolation": spec["interpolation"], "arch_kwargs": spec["arch_kwargs"],
                        "description": f"Fashion-MNIST conv-stem ViT, {kind} attention, seed {seed}, "
                                       f"{100 * card['shipped_test_top1']:.2f}% test top-1"})
        print(f"{f.stem}: {100 * card['shipped_test_top1']:.2f}% test top-1 (fp16 file)")
    lines = ["# questbench built-in registry: written by tools/build_zoo.py. Users add entries in files of their own",
             "# (QUESTBENCH_REGISTRY or --registry), in the same shape.", ""]
    for e in entries:
        lines.append("[[model]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in e.items()]
        lines.append("")
    lines.append((ZOO / "timm.toml.part").read_text())
    (ZOO / "registry.toml").write_text("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
