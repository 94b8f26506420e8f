"""The import contract (pyproject.toml `[tool.importlinter]`), checked by import-linter itself: layers
pages > ui > core.services > core.formats | core.model > core.base > storage, no Streamlit below ui,
every module of core and of core.services placed in a layer (services that do not call each other),
and no import cycle in any package. And the contract bites: a copy of the tree with one wrong import
fails it, naming the import. An import the linter cannot see (`import_module`, `__import__`,
`sys.modules`, `exec`) is allowed only in the backend registry."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

TREE = ("core", "storage", "ui", "pages", "pyproject.toml")


def lint_imports(where: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` over the packages in `where` (they come first on the import path)."""
    env = {**os.environ, "PYTHONPATH": str(where)}
    script = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", script], cwd=where, env=env, capture_output=True, text=True)


def test_the_tree_keeps_the_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("changes", "contract"),
    [
        ([("core/base/text.py", "from core.services import turns")], "Layers"),  # the base reaching up
        ([("storage/db.py", "import core.base.text")], "Layers"),  # storage knowing core
        ([("core/formats/cards.py", "from core.model import prompts")], "Layers"),  # siblings apart
        ([("core/base/errors.py", "import streamlit")], "Only ui and pages import Streamlit"),
        ([("core/services/turns.py", "from core.services import characters")], "Services do not call each other"),
        ([("core/model/backend.py", "from core.model import registry")], "No import cycles"),
        # a new module directly under core, outside every layer, reaching ui (which imports no Streamlit)
        ([("core/helpers.py", "from ui import markdown")], "Core's packages"),
        # a new service, in no layer, that calls two others
        ([("core/services/newsvc.py", "import core.services.characters, core.services.turns")], "Services do not"),
        ([("pages/home.py", "import pages.chat"), ("pages/chat.py", "import pages.home")], "No import cycles"),
    ],
)
def test_a_wrong_import_breaks_it(tmp_path: Path, changes: list[tuple[str, str]], contract: str) -> None:
    for name in TREE:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, tmp_path / name)
    for module, wrong in changes:  # appended to a module, or a new one
        target = tmp_path / module
        target.write_text((target.read_text() if target.exists() else "") + f"\n{wrong}  # deliberately wrong\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert f"{contract}" in result.stdout and "BROKEN" in result.stdout, result.stdout


# -- imports the linter cannot see ------------------------------------------------------------------------
REGISTRY = "core/model/registry.py"  # imports the chosen backend by name, so that no other is loaded


def hidden_imports(source: str, name: str = "<source>") -> list[str]:
    """Where `source` imports, or runs, code that no import statement names: `importlib` (its
    `import_module` above all), `__import__`, `sys.modules`, and `exec`/`eval` of a string."""
    found = []
    for node in ast.walk(ast.parse(source, filename=name)):
        where = f"{name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import) and any(alias.name.split(".")[0] == "importlib" for alias in node.names):
            found.append(f"{where}: import importlib")
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "importlib":
            found.append(f"{where}: from importlib import …")
        if isinstance(node, ast.Name) and node.id in {"__import__", "exec", "eval", "importlib"}:
            found.append(f"{where}: {node.id}")
        sys_modules = (
            isinstance(node, ast.Attribute) and node.attr == "modules" and getattr(node.value, "id", "") == "sys"
        )
        if sys_modules or (isinstance(node, ast.Attribute) and node.attr in {"import_module", "__import__"}):
            found.append(f"{where}: .{node.attr}")
    return found


def test_no_module_imports_what_the_linter_cannot_see() -> None:
    files = [p for folder in ("core", "storage", "ui", "pages") for p in sorted((ROOT / folder).rglob("*.py"))]
    problems = [
        problem
        for path in [*files, ROOT / "Home.py"]
        if path.relative_to(ROOT).as_posix() != REGISTRY
        for problem in hidden_imports(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())
    ]
    assert problems == []
    assert len(files) > 60


@pytest.mark.parametrize(
    "line",
    [
        'importlib.import_module("streamlit")',
        'from importlib import import_module as load\nload("core.services.turns")',
        'import importlib\nimportlib.import_module("ui")',
        '__import__("streamlit")',
        'st = sys.modules["streamlit"]',
        'st = sys.modules.get("streamlit")',
        'exec("import streamlit")',
        "eval(\"__import__('streamlit')\")",
    ],
)
def test_the_hidden_import_check_finds_each_way(line: str) -> None:
    assert hidden_imports(line), line


def test_session_exec_and_model_eval_are_not_hidden_imports() -> None:
    assert hidden_imports("session.exec(select(User)).first()\nmodel.eval()\nimport sys\nsys.argv") == []


def test_the_registry_loads_only_backends_and_knows_every_name_settings_accepts() -> None:
    from core.base import settings
    from core.model import registry

    assert set(registry.BACKENDS) == set(settings.BACKENDS)
    for target in registry.BACKENDS.values():
        module, _, name = target.partition(":")
        assert module.startswith("core.model.backends."), target
        assert (ROOT / module.replace(".", "/")).with_suffix(".py").is_file() and name, target
