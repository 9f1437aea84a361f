"""The package's layers and which may import which (docs/layout.md): every import of every module, at the top
or inside a function, goes down the table, never up; and the torch-free layers load without torch."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import questbench

PACKAGE = Path(questbench.__file__).parent

# layer of a module: the longest prefix listed
LAYER_OF = {
    "questbench.errors": "foundation", "questbench._io": "foundation", "questbench.versions": "foundation",
    "questbench.progress": "foundation",
    "questbench.kinds": "kinds",
    "questbench.config": "config",
    "questbench.stats": "stats",
    "questbench.store": "store",
    "questbench.data": "data",
    "questbench.models": "models",
    "questbench.evaluators": "evaluators",
    "questbench.run": "run",
    "questbench.report": "report",
    "questbench.toy": "experiment",
    "questbench": "entry", "questbench.cli": "entry", "questbench.__main__": "entry",
}
MAY_IMPORT = {
    "foundation": set(),
    "kinds": {"foundation"},
    "config": {"foundation", "kinds"},
    "stats": {"foundation", "config"},
    "store": {"foundation", "kinds", "config"},
    "data": {"foundation", "config"},
    "models": {"foundation", "config", "data"},
    "evaluators": {"foundation", "config", "stats", "data", "models"},
    "run": {"foundation", "kinds", "config", "stats", "store", "data", "models", "evaluators"},
    "report": {"foundation", "kinds", "config", "stats", "store"},
    "experiment": {"foundation", "config", "stats", "models"},
    "entry": {"foundation", "kinds", "config", "stats", "store", "data", "models", "evaluators", "run", "report",
              "experiment"},
}
# The one edge that goes sideways, taken only when a page's images are drawn: the html page shows the corrupted
# images the models saw, which only the data and the evaluators can remake (inside a function, so the report
# layer still loads without torch).
LAZY_EXCEPTIONS = {("questbench.report.thumbnails", "data"), ("questbench.report.thumbnails", "evaluators")}
# A kind module declares at import and binds the layers it runs when called: what it runs (datasets, models,
# evaluators) and the statistics of its tables are imported inside its functions, so every layer can read the
# registry and the torch-free ones stay torch-free.
LAZY_LAYERS = {"kinds": {"config", "stats", "data", "models", "evaluators"}}
TORCH_FREE = ("foundation", "kinds", "config", "stats", "store", "report")


def layer_of(module: str) -> str:
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        layer = LAYER_OF.get(".".join(parts[:i]))
        if layer:
            return layer
    raise KeyError(module)


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports(source: str, module: str, is_package: bool):
    """(imported questbench module, at top level?) for every import statement in the source."""
    package = module if is_package else module.rpartition(".")[0]
    tree = ast.parse(source)
    top = set(map(id, tree.body))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from . import run` names a module; `from .x import f` names x
            names = [f"{target}.{a.name}" if not node.module else target for a in node.names]
        else:
            continue
        for name in names:
            if name == "questbench" or name.startswith("questbench."):
                yield name, id(node) in top


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    mine = layer_of(module)
    out = []
    for target, at_top in imports(source, module, is_package):
        theirs = layer_of(target)
        if theirs == mine or theirs in MAY_IMPORT[mine]:
            continue
        if not at_top and ((module, theirs) in LAZY_EXCEPTIONS or theirs in LAZY_LAYERS.get(mine, ())):
            continue
        out.append(f"{module} ({mine}) imports {target} ({theirs})")
    return out


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, module_name(path)


def test_every_import_goes_down_the_layers():
    found = [v for path, mod in modules() for v in violations(path.read_text(), mod, path.name == "__init__.py")]
    assert not found, "\n".join(found)


def test_every_module_has_a_layer():
    assert [mod for _, mod in modules() if not layer_of(mod)] == []


@pytest.mark.parametrize("source, module, expected", [
    ("from ..run.runner import Runner\n", "questbench.report.tables", "questbench.run.runner (run)"),
    ("def f():\n    from ..models import build\n", "questbench.store.results", "questbench.models (models)"),
    ("from .. import run\n", "questbench.evaluators.common", "questbench.run (run)"),
    ("import questbench.report.leaderboard\n", "questbench.config.suite", "questbench.report.leaderboard (report)"),
    ("from ..data import load_dataset\n", "questbench.report.thumbnails", "questbench.data (data)"),  # not lazy
    ("from ..evaluators.clean import evaluate_clean\n", "questbench.kinds.clean",
     "questbench.evaluators.clean (evaluators)"),  # a kind runs evaluators only from inside a function
    ("def f():\n    from ..run.plan import Unit\n", "questbench.kinds.clean", "questbench.run.plan (run)"),
])
def test_the_check_catches_an_upward_import(source, module, expected):
    assert [v.split(" imports ")[1] for v in violations(source, module)] == [expected]


def test_the_check_lets_a_lower_or_lazy_listed_import_through():
    assert violations("from ..stats.metrics import mce\nfrom ..errors import QuestbenchError\n",
                      "questbench.report.tables") == []
    assert violations("def f():\n    from ..data import load_dataset\n", "questbench.report.thumbnails") == []
    assert violations("def f():\n    from ..evaluators.clean import evaluate_clean\n", "questbench.kinds.clean") == []


def test_torch_free_layers_load_without_torch():
    """Each module of the store, statistics, configuration and report layers, imported in a fresh interpreter,
    leaves torch (and timm) unimported: the report commands start without them."""
    mods = [mod for _, mod in modules() if layer_of(mod) in TORCH_FREE]
    assert "questbench.report.leaderboard" in mods and "questbench.config.suite" in mods
    code = ("import sys\n"
            f"for m in {mods!r}:\n"
            "    __import__(m)\n"
            "    heavy = [h for h in ('torch', 'timm', 'torchvision') if h in sys.modules]\n"
            "    assert not heavy, f'{m} imports {heavy}'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
