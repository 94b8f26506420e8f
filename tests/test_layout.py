"""The layering the code relies on, checked on every run so it cannot quietly erode.

Pages reach data only through the services; `core/` and `storage/` know nothing of Streamlit;
`storage/` knows nothing of `core/`; no page grows past 250 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize(("folder", "forbidden"), [("core", "streamlit"), ("storage", "streamlit"), ("storage", "core"),
                                                   ("pages", "storage"), ("ui", "pages")])  # fmt: skip
def test_no_upward_or_sideways_imports(folder: str, forbidden: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(m for m in imported_modules(path) if m.split(".")[0] == forbidden)
        for path in files(folder)
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_pages_stay_small() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in files("pages")}
    assert sizes and max(sizes.values()) <= 250, sizes


def test_the_remote_side_of_the_seam_needs_no_torch() -> None:
    """The services and the backend seam import without torch (a remote backend's host may not have it)."""
    import subprocess
    import sys

    probe = (
        "import sys; import core.model.backend, core.model.backends.openai.backend, core.services.characters, "
        "core.services.conversations, core.services.turns, core.formats.cards; "
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
