"""What the code and its prose name is there: every public name a module of core, storage or ui defines
is used by the app, and every module, name or path the README, a docstring or a comment mentions
(`core.formats.backup.LIMITS`, `core/model/registry.py`) exists. Both are read from the source, so
nothing is imported here."""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import ROOT

# Used only by tests, and kept on purpose: each is the API tests read the app's state through.
TEST_API = {
    "core/base/profile.py": {"PROMPT_FIELDS"},  # which profile fields go into the prompt
    "core/formats/cards.py": {"profile_from_card"},  # a card's profile, as Create would fill it
    "storage/characters.py": {"get_character"},  # a row by its id, without the access rule
    "storage/conversations.py": {"get_conversation"},  # likewise
    "storage/db.py": {"current_revision"},  # the database's schema revision (the migration tests)
}
APP = ("core", "storage", "ui", "pages", "desktop", "bench")
PROSE = [ROOT / "README.md", *(p for folder in APP for p in sorted((ROOT / folder).rglob("*.py"))), ROOT / "Home.py"]


def _sources(folders: tuple[str, ...]) -> list[Path]:
    files = [p for folder in folders for p in sorted((ROOT / folder).rglob("*.py"))]
    return files + ([ROOT / "Home.py"] if "pages" in folders else [])


def _uses(paths: list[Path]) -> Counter[str]:
    """How often each name is read: a name or an attribute loaded, a name imported (ruff keeps an import
    only where it is used), or a word in a string (`registry.BACKENDS` names its classes)."""
    uses: Counter[str] = Counter()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                uses[node.id] += 1
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                uses[node.attr] += 1
            elif isinstance(node, ast.alias):
                uses[node.name.rsplit(".", 1)[-1]] += 1
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                uses.update(re.findall(r"[A-Za-z_]\w*", node.value))
    return uses


def _defined(tree: ast.Module) -> list[tuple[int, str]]:
    """The public names a module defines at its top level: functions, classes and constants."""
    found = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            found.append((node.lineno, node.name))
        elif isinstance(node, ast.Assign):
            found += [(node.lineno, target.id) for target in node.targets if isinstance(target, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found.append((node.lineno, node.target.id))
    return [(line, name) for line, name in found if not name.startswith("_")]


def unused(checked: list[Path], users: list[Path], root: Path = ROOT) -> list[str]:
    """Each public name of `checked` that nothing in `users` reads (TEST_API aside)."""
    uses = _uses(users)
    return [
        f"{path.relative_to(root).as_posix()}:{line}: {name}"
        for path in checked
        for line, name in _defined(ast.parse(path.read_text(encoding="utf-8")))
        if not uses[name] and name not in TEST_API.get(path.relative_to(root).as_posix(), set())
    ]


def test_every_public_name_in_core_storage_and_ui_is_used_by_the_app() -> None:
    checked = [p for p in _sources(("core", "storage", "ui")) if "migrations" not in p.parts]
    assert unused(checked, _sources(APP)) == [], "remove dead code, or say in TEST_API why tests need it"
    assert len(checked) > 60


def test_the_dead_code_check_finds_a_function_nobody_calls(tmp_path: Path) -> None:
    module = tmp_path / "module.py"
    module.write_text("def kept():\n    pass\n\n\ndef dead():\n    pass\n\n\nLIMIT = 3\n")
    caller = tmp_path / "caller.py"
    caller.write_text("from module import kept\n\nkept()\nprint('LIMIT')\n")
    assert unused([module], [module, caller], root=tmp_path) == ["module.py:5: dead"]


# -- what the prose names ---------------------------------------------------------------------------------
DOTTED = re.compile(r"\b((?:core|storage|ui|pages)(?:\.[A-Za-z_]\w*)+)")
PATH = re.compile(r"\b((?:core|storage|ui|pages)/[\w/.<>-]*\w)")


def _module_file(dotted: str) -> Path | None:
    base = ROOT / dotted.replace(".", "/")
    return base.with_suffix(".py") if base.with_suffix(".py").is_file() else next(iter(base.glob("__init__.py")), None)


def _members(tree: ast.AST) -> set[str]:
    """The names a module or class body defines (imports included: a module re-exports what it imports)."""
    names: set[str] = set()
    for node in getattr(tree, "body", []):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.If | ast.Try | ast.With):  # `if TYPE_CHECKING:`, `try: import …`
            names |= _members(node)
    return names


def resolves(dotted: str) -> bool:
    """Whether `core.x.y.Name.attr` names a module, then a name it defines, then (for a class) a member."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        if (path := _module_file(".".join(parts[:end]))) is not None:
            break
    else:
        return False
    if (ROOT / "/".join(parts[:end])).is_dir() and end < len(parts):  # a module of the package
        return False
    scope: ast.AST = ast.parse(path.read_text(encoding="utf-8"))
    for name in parts[end:]:
        if name in ("py", "md", "po"):  # `core/base/i18n.py` written with dots
            return True
        if name not in _members(scope):
            return False
        scope = next((n for n in ast.walk(scope) if isinstance(n, ast.ClassDef) and n.name == name), ast.Module([]))
        if not getattr(scope, "body", None):
            return True  # a function or constant: its attributes are not checked
    return True


def stale(paths: list[Path]) -> list[str]:
    found = []
    for path in paths:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.lstrip().startswith(("from ", "import ")):
                continue
            where = f"{path.relative_to(ROOT).as_posix()}:{number}"
            found += [f"{where}: {ref}" for ref in DOTTED.findall(line) if not resolves(ref.rstrip("."))]
            for ref in PATH.findall(line):
                real = ref.replace("<lang>", "en").replace("<name>", "")
                if "<" not in real and not (ROOT / real).exists() and not (ROOT / f"{real}.py").exists():
                    found.append(f"{where}: {ref}")
    return found


def test_every_module_name_and_path_the_prose_mentions_exists() -> None:
    assert stale(PROSE) == []


@pytest.mark.parametrize(
    ("ref", "exists"),
    [
        ("core.formats.backup.LIMITS", True),
        ("core.services.backup.LIMITS", False),  # README once said so; LIMITS is the format's
        ("core.base.i18n.STRINGS", False),  # the strings moved to the .po files
        ("core.model.registry.make_backend", True),
        ("core.base.settings.Settings.backend_key", True),
        ("core.base.settings.Settings.no_such_method", False),
        ("core.model.backends.gemma", True),
        ("core.nothing", False),
    ],
)
def test_a_reference_resolves_only_when_its_target_is_there(ref: str, exists: bool) -> None:
    assert resolves(ref) is exists


def annotation_problems(path: Path) -> list[str]:
    """Annotations `module.Name` (with `module` one of ours, imported in that file) whose module has no
    such name: `typing.get_type_hints` would fail on them, and a reader looks in vain."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules |= {a.asname or a.name: f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            modules |= {a.asname: a.name for a in node.names if a.asname}
    annotations = [
        a
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.AnnAssign | ast.arg)
        for a in [getattr(node, "returns", None), getattr(node, "annotation", None)]
        if a is not None
    ]
    problems = []
    for annotation in annotations:
        for node in ast.walk(annotation):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
                dotted = f"{modules[node.value.id]}.{node.attr}"
                if DOTTED.fullmatch(dotted) and _module_file(modules[node.value.id]) and not resolves(dotted):
                    problems.append(f"{path.relative_to(ROOT).as_posix()}:{node.lineno}: {ast.unparse(annotation)}")
    return problems


def test_every_annotation_through_a_module_names_something_there() -> None:
    assert [p for path in _sources(("core", "storage", "ui", "pages")) for p in annotation_problems(path)] == []
