"""The UI strings (core/base/locales/<lang>.po): every key the code asks for is in every language, with
the same placeholders, and nothing else is; the files are clean gettext that Babel reads. The keys are
read from the source, and a key the scan cannot read fails it unless DYNAMIC lists the keys it can be;
at run time, an unknown key fails the test that asks for it (and reads "(text missing)" in the app)."""

from __future__ import annotations

import ast
import dataclasses
import functools
import gettext
import importlib
import logging
import pkgutil
import re
import string
from dataclasses import dataclass
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po

import core
import ui
from core.base import i18n
from core.base.errors import Refused, UserError
from core.base.i18n import LOCALES, UI_LANGUAGES, MissingString, known, t
from core.base.profile import EDITABLE, FIELDS
from core.base.sampling import SamplerSettings
from core.services import draft

ROOT = Path(__file__).resolve().parents[1]
CODE = sorted(p for folder in ("core", "ui", "pages", "desktop", "storage") for p in (ROOT / folder).rglob("*.py"))
CODE.append(ROOT / "Home.py")
PLURAL_FORMS = {"en": "nplurals=2; plural=(n != 1);", "zh": "nplurals=1; plural=0;"}


def _catalog(lang: str) -> Catalog:
    with (LOCALES / f"{lang}.po").open("rb") as file:
        return read_po(file, abort_invalid=True)  # a line Babel cannot read fails here


CATALOGS = {lang: _catalog(lang) for lang in UI_LANGUAGES}


def _forms(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """A msgid or msgstr as its forms: a plural entry has one per plural form of the language."""
    return (value,) if isinstance(value, str) else tuple(value)


def _entries(lang: str) -> dict[str, tuple[str, ...]]:
    return {m.context: _forms(m.string) for m in CATALOGS[lang] if m.id}


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


# -- Which keys the code uses ---------------------------------------------------------------------------
# The scan reads the source (nothing is run). Each call that names a string, by any name it is known by in
# that module (imported, aliased, reached through a module), has its key read from the code: a literal,
# either side of `a if c else b`, a name assigned such values in the same function, or a loop over a
# literal tuple. A call whose key cannot be read fails the scan unless DYNAMIC lists it.

# Calls whose first argument, or `key=`, is a key.
KEY_FUNCTIONS = {"core.base.i18n.t", "core.base.i18n.Text", "ui.language.tr", "ui.language.tr_plain",
                 "ui.widgets.upload_help"}  # fmt: skip
# Local helpers that make a key of their first argument; their calls are read like a key function's.
PREFIXED = {
    ("core/formats/cards.py", "warn"): "card.warning.",  # warn(what, …) adds Text(f"card.warning.{what}")
    ("ui/chat.py", "slider"): "sampler.label.",  # the reply settings' inputs, tr(f"sampler.label.{name}")
    ("ui/chat.py", "whole"): "sampler.label.",
}
USER_ERROR = "core.base.errors.UserError"  # its subclasses, anywhere, take a code (first argument or `code=`)
# A code and a namespace that is not a UserError: ui/resources.py shows `database.<code>` of storage/db.py.
CODE_CLASSES = {"storage.db.DatabaseProblem": "database"}


@dataclass(frozen=True)
class Family:
    """The keys a call the scan cannot read can make; `required`: each must be in every catalog (else the
    call shows it only where `known`)."""

    keys: frozenset[str]
    required: bool = True


PASSED_ON = "passed on"  # a key made and read where it began (a Text, an error, a call of a key function)
STORED = "stored"  # a key read back from a stored row: taken only when `known` (else shown as the row's text)
SAMPLER = frozenset(f"sampler.{f.name}" for f in dataclasses.fields(SamplerSettings))
FIRST_RUN = frozenset(
    f"firstrun.{name}" for name in re.findall(r"\{\{(\w+)\}\}", (ROOT / "desktop" / "firstrun.html").read_text())
)
DRAFTED = frozenset(f"field.{name}" for name in draft.FIELDS)  # the fields "Read the sheet" fills
LABELS = frozenset(f.label_key for f in FIELDS if f.name in EDITABLE)  # each input a form shows
TOO_MUCH = frozenset({"card.too_large", "card.too_much_text"})  # core/formats/cards.py `_TooLarge`'s codes
# Every call whose key the scan cannot read: (file, function, its key as written) -> what it can be.
DYNAMIC: dict[tuple[str, str, str], Family | str] = {
    # The machinery itself, passing on a key made (and read) elsewhere.
    ("core/base/i18n.py", "Text.render", "self.key"): PASSED_ON,
    ("core/base/errors.py", "UserError.text", "f'{self.namespace}.{self.code}'"): PASSED_ON,  # read where raised
    ("ui/language.py", "tr", "key"): PASSED_ON,  # tr's own key: read at every tr()
    ("ui/language.py", "tr_plain", "key"): PASSED_ON,
    ("ui/language.py", "say", "text.key"): PASSED_ON,  # a Text's or an error's key: read where it was made
    ("ui/widgets.py", "upload_help", "key"): PASSED_ON,  # a key function itself
    ("core/model/backend.py", "Reporter.__call__", "self.current.key"): PASSED_ON,  # a phase, sent on with its time
    ("core/formats/cards.py", "warn", "f'card.warning.{key}'"): PASSED_ON,  # PREFIXED: read at each warn()
    ("ui/chat.py", "slider", "f'sampler.label.{name}'"): PASSED_ON,  # PREFIXED
    ("ui/chat.py", "whole", "f'sampler.label.{name}'"): PASSED_ON,  # PREFIXED
    ("ui/resources.py", "db", "f'database.{problem.code}'"): PASSED_ON,  # CODE_CLASSES: read where raised
    # Stored rows.
    ("core/services/turns.py", "error_of", "key"): STORED,
    # Families: keys built from data, each listed in full.
    ("core/base/sampling.py", "InvalidSampler.messages", "key"): Family(SAMPLER),  # `_problem`: f"sampler.{name}"
    ("core/base/sampling.py", "InvalidSampler.__init__", "key.removeprefix('sampler.')"): Family(SAMPLER),
    ("desktop/firstrun.py", "page", "f'firstrun.{m.group(1)}'"): Family(FIRST_RUN),  # each {{name}} of the page
    ("core/formats/cards.py", "png_text_chunks", "exc.code"): Family(TOO_MUCH),
    ("ui/draft.py", "apply_draft", "f'field.{name}'"): Family(DRAFTED),
    ("ui/draft.py", "draft_controls", "f'field.{name}'"): Family(DRAFTED),
    ("ui/profile_form.py", "_input", "field.label_key"): Family(LABELS),
    # An input's help and placeholder, shown where `known`.
    ("ui/profile_form.py", "_optional", "key"): Family(
        frozenset(f"field.{name}.{part}" for name in EDITABLE for part in ("help", "placeholder")), required=False
    ),
}


@functools.cache
def _parse(path: str, text: str) -> ast.Module:
    return ast.parse(text, path)  # read only: shared by every scan


def _module_of(path: str) -> str:
    parts = Path(path).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _dotted(node: ast.AST) -> str | None:
    """`a.b.c` for a name reached through attributes, else None (`self.x()`, `f()()`)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and (base := _dotted(node.value)):
        return f"{base}.{node.attr}"
    return None


class Code:
    """The modules scanned, each name in each resolved to where it is defined: `from x import y as z`,
    `import x.y as z`, a def or class of its own, and an alias `z = y`."""

    def __init__(self, sources: dict[str, str]) -> None:
        self.trees = {path: _parse(path, text) for path, text in sources.items()}
        self.names = {_module_of(path): self._bindings(path, tree) for path, tree in self.trees.items()}
        self.errors = self._user_errors()
        for path, tree in self.trees.items():  # aliases (`_R = Refused`), once every module's names are known
            names = self.names[_module_of(path)]
            for node in ast.walk(tree):
                alias = (
                    isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                )
                if alias and (dotted := _dotted(node.value)) and (target := self.resolve(path, dotted)) in self.named():
                    names[node.targets[0].id] = target
        self.errors = self._user_errors()  # again: a class may derive from an alias

    @staticmethod
    def _bindings(path: str, tree: ast.Module) -> dict[str, str]:
        module, names = _module_of(path), {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names |= {a.asname or a.name: f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                names |= {a.asname: a.name for a in node.names if a.asname}
                names |= {a.name.split(".")[0]: a.name.split(".")[0] for a in node.names if not a.asname}
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names[node.name] = f"{module}.{node.name}"
        return names

    def named(self) -> set[str]:
        """What the scan follows: the key functions and every class that takes a code."""
        return KEY_FUNCTIONS | set(CODE_CLASSES) | set(self.errors)

    def resolve(self, path: str, dotted: str) -> str | None:
        """Where `dotted`, as written in `path`, is defined (through re-exports), if in scanned code."""
        head, _, rest = dotted.partition(".")
        if (found := self.names[_module_of(path)].get(head)) is None:
            return None
        full = f"{found}.{rest}" if rest else found
        for _ in range(10):  # a re-export: `from core.services.access import Actor` in users, read as users.Actor
            module, _, name = full.rpartition(".")
            if (again := self.names.get(module, {}).get(name)) is None or again == full:
                return full
            full = again
        return full

    def _user_errors(self) -> dict[str, tuple[str, bool]]:
        """Every UserError subclass in the scanned code -> (its namespace, whether its constructor's first
        argument is its code: a class with its own `__init__` that sets the code itself takes none)."""
        classes = {
            f"{_module_of(path)}.{node.name}": (path, node)
            for path, tree in self.trees.items()
            for node in ast.walk(tree)
            if isinstance(node, ast.ClassDef)
        }
        errors: dict[str, tuple[str, bool]] = {}
        if USER_ERROR in classes:
            errors[USER_ERROR] = ("error", True)
        while True:
            added = False
            for name, (path, node) in classes.items():
                bases = [self.resolve(path, d) for b in node.bases if (d := _dotted(b))]
                base = next((errors[b] for b in bases if b in errors), None)
                if name in errors or base is None:
                    continue
                namespace = next(
                    (
                        stmt.value.value
                        for stmt in node.body
                        if isinstance(stmt, ast.Assign)
                        and any(getattr(t, "id", "") == "namespace" for t in stmt.targets)
                        and isinstance(stmt.value, ast.Constant)
                    ),
                    base[0],
                )
                errors[name] = (namespace, _passes_code(node) if _own_init(node) else base[1])
                added = True
            if not added:
                return errors


def _own_init(cls: ast.ClassDef) -> ast.FunctionDef | None:
    return next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)


def _super_init(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "__init__"
        and isinstance(node.func.value, ast.Call)
        and getattr(node.func.value.func, "id", "") == "super"
    )


def _argument(call: ast.Call, keyword: str) -> ast.AST | None:
    return call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == keyword), None)


def _passes_code(cls: ast.ClassDef) -> bool:
    """Whether the class's own `__init__` hands its first parameter to UserError as the code."""
    init = _own_init(cls)
    params = [a.arg for a in init.args.args[1:]] if init else []
    calls = [n for n in ast.walk(init) if _super_init(n)] if init else []
    return bool(params) and any(getattr(_argument(c, "code"), "id", None) == params[0] for c in calls)


def _strings(node: ast.AST | None, assigned: dict[str, list[ast.AST | None]]) -> set[str] | None:
    """The texts a key can be, or None if the scan cannot tell: a literal, either side of `a if c else b`,
    or a name whose every value in the function (an assignment, a loop over a literal tuple) is one."""
    if isinstance(node, ast.Constant):
        return {node.value} if isinstance(node.value, str) else None
    if isinstance(node, ast.IfExp):
        body, orelse = _strings(node.body, assigned), _strings(node.orelse, assigned)
        return None if body is None or orelse is None else body | orelse
    if isinstance(node, ast.Name) and assigned.get(node.id):
        found = [_strings(value, {}) for value in assigned[node.id]]
        return None if any(f is None for f in found) else set().union(*found)
    return None


def _assigned(scope: ast.AST, into: dict[str, list[ast.AST | None]] | None = None) -> dict[str, list[ast.AST | None]]:
    """Each name's values in a scope: assignments, and loops (a literal tuple gives its items, anything
    else an unknown value, None); a parameter is unknown."""
    assigned = {name: list(values) for name, values in (into or {}).items()}  # the module's, then this scope's
    if isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
        for arg in [*scope.args.posonlyargs, *scope.args.args, *scope.args.kwonlyargs]:
            assigned[arg.arg] = [None]
    for node in ast.walk(scope):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    assigned.setdefault(target.id, []).append(node.value)
        elif isinstance(node, ast.AnnAssign | ast.AugAssign | ast.NamedExpr) and isinstance(node.target, ast.Name):
            assigned.setdefault(node.target.id, []).append(getattr(node, "value", None) or None)
        elif isinstance(node, ast.For | ast.comprehension) and isinstance(node.target, ast.Name):
            items = node.iter.elts if isinstance(node.iter, ast.Tuple | ast.List | ast.Set) else [None]
            assigned.setdefault(node.target.id, []).extend(items)
    return assigned


@dataclass
class Scan:
    required: set[str] = dataclasses.field(default_factory=set)
    optional: set[str] = dataclasses.field(default_factory=set)
    unread: list[str] = dataclasses.field(default_factory=list)  # calls whose key the scan cannot read
    dynamic: set[tuple[str, str, str]] = dataclasses.field(default_factory=set)  # DYNAMIC entries met


def scan(sources: dict[str, str]) -> Scan:
    code, found = Code(sources), Scan()
    for path, tree in code.trees.items():
        top = [s for s in tree.body if not isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)]
        module_values = _assigned(ast.Module(top, []))
        _scan_scope(code, path, tree, "", module_values, None, found)
        called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
        for node in ast.walk(tree):  # `map(tr, names)`, `format_func=tr`: keys no call shows
            loaded = isinstance(node, ast.Name | ast.Attribute) and isinstance(node.ctx, ast.Load)
            value = loaded and id(node) not in called and (dotted := _dotted(node))
            if value and code.resolve(path, dotted) in KEY_FUNCTIONS - {"core.base.i18n.Text"}:  # Text: also a type
                found.unread.append(f"{path}:{node.lineno}: {dotted} passed as a value")
    return found


def _scan_scope(code: Code, path: str, scope: ast.AST, where: str, values, cls: str | None, found: Scan) -> None:
    """The calls directly in `scope` (a module, class or function); nested scopes recursively."""
    if isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
        values = _assigned(scope, values)
    for node in ast.iter_child_nodes(scope):
        if isinstance(node, ast.ClassDef):
            _scan_scope(code, path, node, node.name, values, f"{_module_of(path)}.{node.name}", found)
            continue
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            name = f"{scope.name}.{node.name}" if isinstance(scope, ast.ClassDef) else node.name
            _scan_scope(code, path, node, name, values, cls if isinstance(scope, ast.ClassDef) else None, found)
            continue
        if isinstance(node, ast.Lambda):
            _scan_scope(code, path, node, where, values, cls, found)
            continue
        if isinstance(node, ast.Call):
            _scan_call(code, path, node, where, values, cls, found)
        _scan_scope(code, path, node, where, values, cls, found)


def _scan_call(code: Code, path: str, call: ast.Call, where: str, values, cls: str | None, found: Scan) -> None:
    target = code.resolve(path, dotted) if (dotted := _dotted(call.func)) else None
    errors = code.errors
    if target in KEY_FUNCTIONS:
        prefix, key = "", _argument(call, "key")
    elif (target in errors and errors[target][1]) or target in CODE_CLASSES:
        prefix, key = f"{errors[target][0] if target in errors else CODE_CLASSES[target]}.", _argument(call, "code")
    elif (path, dotted) in PREFIXED:
        prefix, key = PREFIXED[path, dotted], _argument(call, "key")
    elif _super_init(call) and cls in errors and where.endswith("__init__"):
        if errors[cls][1]:
            return  # hands its own `code` on: read where the class is called
        prefix, key = f"{errors[cls][0]}.", _argument(call, "code")
    else:
        return
    texts = _strings(key, values)
    if texts is not None:
        found.required |= {prefix + text for text in texts}
        return
    written = ast.unparse(key) if key is not None else "(nothing)"
    entry = DYNAMIC.get((path, where, written))
    if entry is None:
        found.unread.append(f"{path}:{call.lineno} in {where or 'the module'}: {ast.unparse(call.func)}({written})")
        return
    found.dynamic.add((path, where, written))
    if isinstance(entry, Family):
        (found.required if entry.required else found.optional).update(entry.keys)


@functools.cache
def _code() -> dict[str, str]:
    return {path.relative_to(ROOT).as_posix(): path.read_text(encoding="utf-8") for path in CODE}


def used_keys() -> tuple[set[str], set[str]]:
    """The keys the code asks for (each must be in every catalog), and those it shows only when they
    exist (each may be)."""
    found = scan(_code())
    # An audience's own wording of a key (`<key>@desktop`: core.base.i18n.AUDIENCES) is used where the key is.
    variants = {f"{key}@{aud}" for key in found.required | found.optional for aud in i18n.AUDIENCES[1:]}
    return found.required, (found.optional | variants) - found.required


def test_the_scan_finds_keys_of_every_kind() -> None:
    """The scan itself: keys from calls, errors (raised, returned, in `super().__init__`), names, families."""
    required, optional = used_keys()
    assert {
        "library.title",  # tr("library.title")
        "progress.thinking",  # Text("progress.thinking")
        "image.empty",  # ImageRejected("empty", ...)
        "storage.full",  # StorageFull: super().__init__("full")
        "chat.error.too_long",  # ContextOverflow: super().__init__("character_too_long" if ... else "too_long")
        "model.error.server_refused",  # key = "server_error" if ... else "server_refused"; BackendError(key, ...)
        "model.error.no_cuda",  # ModelLoadError, a BackendError: its namespace is inherited
        "progress.picture",  # key = "progress.sheet" if ... else "progress.picture"; Text(key, ...)
        "database.newer",  # DatabaseProblem("newer", ...)
        "card.warning.cut",  # warn("cut", ...)
        "sampler.label.top_p",  # slider("top_p", ...)
        "field.tags",
        "sampler.top_k",
        "firstrun.hub_id",
        "common.text_missing",  # what a running app shows for a missing string
    } <= required
    assert "field.name.placeholder" in optional


def test_the_scan_reads_every_key_or_knows_why_not() -> None:
    """Every call that names a string has a key the scan can read, or is listed in DYNAMIC (with the keys it
    can make); and every DYNAMIC entry is still met, so the list stays short and true."""
    found = scan(_code())
    assert found.unread == [], "a key the scan cannot read: write it out, or add it to DYNAMIC with its keys"
    assert set(DYNAMIC) - found.dynamic == set(), "DYNAMIC entries no code has any more"


def test_the_scan_knows_every_user_error() -> None:
    """Reading the source finds each UserError subclass that exists when core and ui are imported, with
    its namespace."""
    for package in (core, ui):
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            importlib.import_module(module.name)

    def below(cls: type) -> list[type]:
        return [c for sub in cls.__subclasses__() for c in (sub, *below(sub))]

    real = {f"{c.__module__}.{c.__qualname__}": c.namespace for c in below(UserError) if "tests" not in c.__module__}
    read = {name: namespace for name, (namespace, _) in Code(_code()).errors.items()}
    assert real.items() <= read.items()
    assert len(real) >= 10


@pytest.mark.parametrize(
    "code",
    [
        'tr("library.nonexistent")',
        'raise NotFound("ghost")',
        'raise errors.Refused("ghost")',  # the class through its module
        'class Ghostly(UserError):\n    namespace = "ghostly"\n\nraise Ghostly("boo")',  # a subclass in ui/
        'tr(f"library.{x}")',
        'tr("library." + x)',
        'tr("library.{}".format(x))',
        'Text("chat.%s" % x)',
        'CODES = {"a": "ghost"}\nraise Refused(CODES[k])',  # a dict of codes
        'def _fail(code):\n    raise Refused(code)\n\n_fail("ghost")',  # a code passed in
        'for code in ("ghost", "not_found"):\n    raise Refused(code)',  # a loop over codes
        'def f():\n    for code in ("ghost",):\n        raise Refused(code)',
        "def f(items):\n    for code in items:\n        raise Refused(code)",  # a loop over anything else
        '_R = Refused\nraise _R("ghost")',  # an alias
        'Text(key="chat.ghost")',  # keyword arguments
        'class Spooky(Refused):\n    def __init__(self):\n        super().__init__(code="ghost")',
        'from core.base.i18n import t as _translate\n_translate("x.ghost")',  # an import under another name
        'import core.base.i18n as words\nwords.t("x.ghost")',
        'labels = list(map(tr, ("x.ghost",)))',  # a key function passed as a value
        'from ui import language\nlanguage.tr("x.ghost")',
    ],
)
def test_the_scan_misses_no_key_however_it_is_written(code: str) -> None:
    """Each way a key can be written, in a new module under ui/: the scan either reads it (and the key is
    not in the catalogs) or says it cannot."""
    header = (
        "from core.base import errors\nfrom core.base.errors import NotFound, Refused, UserError\n"
        "from core.base.i18n import Text\nfrom ui.language import tr\n\n"
    )
    found = scan(_code() | {"ui/ghost.py": header + code})
    assert found.unread or found.required - set(_entries("en")), code


def test_every_key_the_code_uses_is_in_every_language_and_nothing_else() -> None:
    required, optional = used_keys()
    for lang in UI_LANGUAGES:
        keys = set(_entries(lang))
        missing, stale = sorted(required - keys), sorted(keys - required - optional)
        assert not missing, f"{lang}.po lacks strings the code asks for: {missing}"
        assert not stale, f"{lang}.po has strings no code asks for (remove them): {stale}"


# -- What each entry says -------------------------------------------------------------------------------
def test_every_string_has_the_same_placeholders_and_lines_in_both_languages() -> None:
    english = _entries("en")
    problems = []
    for lang in UI_LANGUAGES:
        for key, forms in _entries(lang).items():
            other = english.get(key, forms)[-1]  # English's every-other-count form is the reference
            expected = _fields(other)
            for index, text in enumerate(forms):
                one = len(forms) > 1 and index == 0  # the singular may say "1" instead of {count}
                if _fields(text) not in ([expected, expected - {"count"}] if one else [expected]):
                    problems.append(f"{lang} {key}[{index}]: {sorted(_fields(text))} != {sorted(expected)}")
                breaks, english_breaks = text.count("\n"), other.count("\n")
                if breaks != english_breaks:  # a numbered list, or a hard break of the Markdown
                    problems.append(f"{lang} {key}[{index}]: {breaks} line breaks, English has {english_breaks}")
    assert problems == []


def test_the_catalogs_are_clean_gettext_with_the_right_plural_forms() -> None:
    assert sorted(path.stem for path in LOCALES.glob("*.po")) == sorted(UI_LANGUAGES)  # one per UI language
    english = {m.context: m for m in CATALOGS["en"] if m.id}
    for lang, catalog in CATALOGS.items():
        assert catalog.locale.language == lang
        assert dict(catalog.mime_headers)["Plural-Forms"] == PLURAL_FORMS[lang]
        # t() takes the first form for count == 1 and the last for any other: the formula must agree.
        plural = gettext.c2py(catalog.plural_expr)
        assert [plural(n) for n in range(200)] == [0 if n == 1 else catalog.num_plurals - 1 for n in range(200)]
        assert not catalog.fuzzy and not catalog.obsolete, f"{lang}.po: fuzzy header or obsolete (#~) entries"
        messages = [m for m in catalog if m.id]
        contexts = [m.context for m in messages]
        assert None not in contexts, f"{lang}.po: an entry without msgctxt (its key)"
        assert len(contexts) == len(set(contexts)), f"{lang}.po: a key twice"
        for message in messages:
            where = f"{lang}.po {message.context}"
            assert not message.fuzzy, f"{where} is fuzzy: check it, then remove the fuzzy flag"
            forms = _forms(message.string)
            assert all(forms), f"{where} is not translated"
            assert len(forms) == (catalog.num_plurals if message.pluralizable else 1), where
            source = english.get(message.context)
            if source is not None:  # msgid is the English source, as en.po has it now
                assert message.id == source.id, f"{where}: msgid is not the current English"
        if lang == "en":  # the English text is its own source: msgstr repeats msgid (and msgid_plural)
            differ = [m.context for m in messages if _forms(m.string) != _forms(m.id)]
            assert not differ, f"en.po: msgstr is not msgid in {differ}"


# -- t() --------------------------------------------------------------------------------------------------
def test_an_unknown_key_fails_the_test_that_shows_it() -> None:
    """tests/conftest.py sets REFSHEET_STRICT_STRINGS=1: a key computed at run time that names no string
    fails whichever test (an AppTest, a browser run) draws it."""
    assert not known("no.such.key")
    with pytest.raises(MissingString, match=r"no\.such\.key"):
        t("no.such.key", "zh", name="x")
    with pytest.raises(MissingString, match=r"refused\.ghost_code"):
        Refused("ghost_code")  # an error whose code names no string
    assert all(known(key) for key in _entries("en"))


def test_a_running_app_never_shows_an_unknown_key(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    """Outside the tests a missing string reads "(text missing)" in the viewer's language, and is logged
    once, never shown as its key."""
    monkeypatch.delenv("REFSHEET_STRICT_STRINGS", raising=False)
    monkeypatch.setattr(i18n, "_reported", set())
    with caplog.at_level(logging.ERROR, logger="core.base.i18n"):
        assert t("no.such.key", "zh", name="x") == "（文字缺失）"
        assert t("no.such.key", "en") == "(text missing)"
        assert Refused("ghost_code").message("en") == "(text missing)"
    logged = [r.getMessage().split("'")[1] for r in caplog.records]
    assert logged == ["no.such.key", "refused.ghost_code"]  # each once, however often it is asked


def test_a_stored_key_from_elsewhere_reads_as_the_text_stored() -> None:
    """The one place an unknown key is expected, a stored row (a backup of another version), is checked
    where the row is read: it is shown as the inert text it is, in tests as in the app."""
    from core.services.turns import error_of

    stored = '{"key": "chat.error.from_a_newer_version", "params": {}}'
    assert error_of(stored) == i18n.Text("chat.error.other", {"reason": stored})
    assert "chat.error.from_a_newer_version" in error_of(stored).render("zh")


def test_no_string_shows_a_card_macro_as_one_of_our_placeholders() -> None:
    """A string that mentions the cards' own `{{user}}` takes it as a parameter: written in the template,
    it would read "{user}" (format's escape), which neither we nor the cards use."""
    problems = []
    for lang in UI_LANGUAGES:
        for key, forms in _entries(lang).items():
            for text in forms:
                shown = t(key, lang, **{name: "<x>" for name in _fields(text)})
                if re.search(r"(?<!\{)\{(user|char)\}(?!\})", shown):
                    problems.append(f"{lang} {key}: {shown}")
    assert problems == []


def test_a_string_missing_in_a_language_reads_in_english(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(i18n._CATALOGS["zh"], "library.title", raising=False)
    assert t("library.title", "zh") == "Character library"


def test_a_fuzzy_or_untranslated_entry_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "zh.po").write_text(
        'msgid ""\nmsgstr ""\n"Language: zh_CN\\n"\n"Plural-Forms: nplurals=1; plural=0;\\n"\n\n'
        '#, fuzzy\nmsgctxt "a"\nmsgid "A"\nmsgstr "甲"\n\nmsgctxt "b"\nmsgid "B"\nmsgstr ""\n\n'
        'msgctxt "c"\nmsgid "C"\nmsgstr "丙"\n',
        encoding="utf-8",
    )
    monkeypatch.setattr(i18n, "LOCALES", tmp_path)
    assert i18n._read_catalog("zh") == {"c": ("丙",)}


def test_counts_read_naturally() -> None:
    assert t("library.card_meta", "en", language="English", count=1, when="today") == (
        "English · 1 conversation · today"
    )
    assert "3 conversations" in t("library.card_meta", "en", language="English", count=3, when="today")
    assert "0 conversations" in t("library.card_meta", "en", language="English", count=0, when="today")
    assert "1 个对话" in t("library.card_meta", "zh", language="English", count=1, when="today")


def test_placeholders_and_line_breaks_survive() -> None:
    assert t("image.empty", "zh", name="a.png") == "“a.png” 是空文件（0 字节）。"
    assert t("image.empty", "en") == "“?” is empty (0 bytes)."  # a parameter nobody gave
    assert t("home.first.steps", "en").count("\n") == 2


def test_unknown_language_falls_back_to_english() -> None:
    assert t("library.title", "fr") == "Character library"
