"""No cycle between ``dicom_node`` and ``training``: training imports the node, never the reverse.

The node (``dicom_node``, and ``models``, which it runs) must not import ``training`` at
all, at module level or inside a function; the training verbs reach ``mrinode`` through
:data:`dicom_node.cli.EXTENSIONS` (the only place the name appears).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NODE_PACKAGES = ("dicom_node", "models")


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module named by an import statement of ``path`` (relative imports resolved to the package)."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def _is_training(module: str) -> bool:
    return module == "training" or module.startswith("training.")


def test_the_node_never_imports_training() -> None:
    offending = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for package in NODE_PACKAGES
        for path in sorted((REPO / package).rglob("*.py"))
        for line, module in _imports(path)
        if _is_training(module)
    ]
    assert offending == []


def test_training_is_named_only_as_a_cli_extension() -> None:
    """No module path ``training.…`` in a string either (``importlib.import_module("training.x")``)."""
    named = []
    for package in NODE_PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                        node.value.startswith("training.") and node.value.replace(".", "").replace("_", "").isalnum():
                    named.append(f"{path.relative_to(REPO)}:{node.value}")
    assert named == ["dicom_node/cli/__init__.py:training.cli"]


def test_training_imports_the_node_so_the_reverse_would_be_a_cycle() -> None:
    """The direction that exists (keeps the test above meaningful)."""
    users = [p for p in (REPO / "training").rglob("*.py") if any(m.startswith("dicom_node") for _, m in _imports(p))]
    assert users


def test_importing_every_node_module_leaves_training_unimported() -> None:
    code = (
        "import importlib, pkgutil, sys\n"
        "import dicom_node, dicom_node.cli\n"
        "skipped = []\n"
        "for info in pkgutil.walk_packages(dicom_node.__path__, 'dicom_node.'):\n"
        "    if info.name.endswith('__main__'):\n"
        "        continue\n"
        "    importlib.import_module(info.name)\n"
        "print(sorted(m for m in sys.modules if m == 'training' or m.startswith('training.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300,
                         check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_training_verbs_are_still_commands() -> None:
    from dicom_node.cli import build_parser

    parser = build_parser()
    for argv in (["synth", "--out", "x"], ["train", "finetune", "--config", "x.toml"],
                 ["retrain", "schedule", "--config", "x.toml"]):
        args = parser.parse_args(argv)
        assert callable(args.func)
        assert args.func.__module__.startswith("training.cli.")
