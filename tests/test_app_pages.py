"""Every page renders in the real Streamlit runtime (AppTest) against a fresh data directory."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT

PAGES = ["pages/home.py", "pages/create.py", "pages/library.py", "pages/chat.py"]


@pytest.fixture
def app_env(tmp_path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("REFSHEET_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def test_home_renders_and_creates_the_database(app_env) -> None:
    at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=30).run()
    assert not at.exception
    assert (app_env / "data" / "refsheet.db").is_file()


@pytest.mark.parametrize("page", PAGES)
def test_each_page_renders(app_env, page: str) -> None:
    at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=30).run()
    at.switch_page(page).run()
    assert not at.exception
    assert at.title  # every page says where you are
