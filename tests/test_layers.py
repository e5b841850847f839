"""The folders are the layers: no module imports a higher layer, and no application reaches into another's private
names. Imports are read from the source (ast), so lazy imports inside functions count as much as module-level ones."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "vdtrain"
# First name under vdtrain/ (module or folder) -> its layer, bottom (0) to top (6); README.md "Layout" says the same.
LAYERS = {
    **dict.fromkeys(["errors", "io", "compat", "keys", "locks"], 0),
    "method": 1,
    "models": 2,
    "data": 3,
    **dict.fromkeys(["training", "integrations"], 4),
    **dict.fromkeys(["filtering", "evaluation", "analysis", "demo", "selection"], 5),
    **dict.fromkeys(["cli", "commands", "__main__", "__init__"], 6),
}
APPLICATIONS = {name for name, layer in LAYERS.items() if layer == 5}
LAZY_NAMES = importlib.import_module("vdtrain")._LAZY  # `from vdtrain import VDTrainer` imports vdtrain.training...


def _module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 2 else parts)


def _top(module: str) -> str:
    """The layer key of a dotted vdtrain module name: `vdtrain.method.noise` -> `method`, `vdtrain` -> `__init__`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _is_module(dotted: str, root: Path) -> bool:
    relative = Path(*dotted.split(".")[1:])
    return (root / relative).with_suffix(".py").is_file() or (root / relative / "__init__.py").is_file()


def _imports(path: Path, root: Path = PACKAGE) -> list[tuple[int, str, str | None]]:
    """(line, imported vdtrain module, imported name or None) of every import in the file, at any depth."""
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, None) for alias in node.names if alias.name.split(".")[0] == "vdtrain"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if base.split(".")[0] != "vdtrain":
                continue
            for alias in node.names:
                dotted = f"{base}.{alias.name}"
                if _is_module(dotted, root):
                    found.append((node.lineno, dotted, None))
                elif base == "vdtrain" and alias.name in LAZY_NAMES:
                    found.append((node.lineno, LAZY_NAMES[alias.name], alias.name))
                else:
                    found.append((node.lineno, base, alias.name))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module",
        ):
            if node.args and isinstance(node.args[0], ast.Constant) and str(node.args[0].value).startswith("vdtrain"):
                found.append((node.lineno, node.args[0].value, None))
    return found


def layer_violations(root: Path = PACKAGE) -> list[str]:
    """Every import of a higher layer under `root` (a `vdtrain` package folder), as `file:line (layer) imports x`."""
    violations = []
    for path in sorted(root.rglob("*.py")):
        layer = LAYERS[_top(_module_name(path, root))]
        for line, target, _ in _imports(path, root):
            if LAYERS[_top(target)] > layer:
                violations.append(f"{path.relative_to(root.parent)}:{line} (layer {layer}) imports {target}")
    return violations


def private_violations(root: Path = PACKAGE) -> list[str]:
    """Imports of another application's private (`_`) names, and a command importing any command but `options`."""
    violations = []
    for path in sorted(root.rglob("*.py")):
        source = _module_name(path, root)
        for line, target, name in _imports(path, root):
            private = (name or "").startswith("_") or any(part.startswith("_") for part in target.split(".")[1:])
            other_application = _top(target) in APPLICATIONS and _top(target) != _top(source)
            command_to_command = (
                _top(source) == "commands"
                and _top(target) == "commands"
                and target not in (source, "vdtrain.commands.options")
                and not (target == "vdtrain.commands" and name == "options")
            )
            if (private and other_application) or command_to_command:
                violations.append(
                    f"{path.relative_to(root.parent)}:{line} imports {target}{'.' + name if name else ''}"
                )
    return violations


def test_every_module_has_a_layer():
    """A new top-level module or folder must be placed in a layer here (and in the README's layout)."""
    unplaced = sorted({_top(_module_name(path)) for path in PACKAGE.rglob("*.py")} - set(LAYERS))
    assert unplaced == [], f"add these to LAYERS and the README's layout: {unplaced}"


def test_no_module_imports_a_higher_layer():
    assert layer_violations() == []


def test_no_application_or_command_imports_anothers_private_names():
    """Applications use each other's public names only; commands share helpers through commands/options.py only."""
    assert private_violations() == []


def _write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_the_checks_see_every_kind_of_import(tmp_path):
    """Relative, lazy (in a function), `from vdtrain import X` and import_module imports are all read."""
    root = tmp_path / "vdtrain"
    _write(root, "__init__.py", "")
    _write(root, "training/__init__.py", "")
    _write(root, "training/trainer.py", "def _helper():\n    pass\n")
    _write(root, "evaluation/__init__.py", "")
    _write(root, "evaluation/chair.py", "def _private():\n    pass\n")
    _write(root, "commands/__init__.py", "")
    _write(root, "commands/options.py", "")
    _write(root, "commands/eval_chair.py", "def _cache():\n    pass\n")
    _write(root, "method/__init__.py", "from ..training import trainer\n")
    _write(root, "method/noise.py", "def f():\n    from vdtrain import VDTrainer\n")
    _write(root, "method/passes.py", "import importlib\nimportlib.import_module('vdtrain.evaluation.chair')\n")
    _write(root, "data/dataset.py", "from vdtrain.method import noise\nimport vdtrain.keys\n")
    _write(root, "analysis/spans.py", "from vdtrain.evaluation.chair import _private\n")
    _write(
        root,
        "commands/inspect.py",
        "from vdtrain.commands import options\nfrom vdtrain.commands.eval_chair import _cache\n",
    )
    assert layer_violations(root) == [
        "vdtrain/method/__init__.py:1 (layer 1) imports vdtrain.training.trainer",
        "vdtrain/method/noise.py:2 (layer 1) imports vdtrain.training.trainer",
        "vdtrain/method/passes.py:2 (layer 1) imports vdtrain.evaluation.chair",
    ]
    assert private_violations(root) == [
        "vdtrain/analysis/spans.py:1 imports vdtrain.evaluation.chair._private",
        "vdtrain/commands/inspect.py:2 imports vdtrain.commands.eval_chair._cache",
    ]


README_API = [
    ("vdtrain", "VDLossMixin"),
    ("vdtrain", "VDTrainer"),
    ("vdtrain", "VDTrainingArguments"),
    ("vdtrain", "add_diffusion_noise"),
    ("vdtrain", "target_logprobs"),
    ("vdtrain", "visual_dependence"),
    ("vdtrain", "token_weights"),
    ("vdtrain", "register_weighting"),
]


@pytest.mark.parametrize(("module", "name"), README_API, ids=[name for _, name in README_API])
def test_public_api_names_import(module, name):
    """SPEC section 3 and the README's public API import from where the README says."""
    assert callable(getattr(importlib.import_module(module), name))
