"""The first-run screen: which model answers. Shown in the window before the server starts, when
nothing says which model to use (no saved choice, no REFSHEET_MODEL / REFSHEET_BACKEND /
REFSHEET_API_BASE), and again from the window's menu (*Choose the model…*) or `--setup`.

Three ways: a Gemma 3 checkpoint folder on this computer; a Gemma 3 hub id (downloaded once, with
the licence and HF_TOKEN steps); or an OpenAI-compatible model server. The choice is saved per user
(`desktop.config`), and the model then starts loading in the background (REFSHEET_PRELOAD).
"""

from __future__ import annotations

import html
import json
import re
import threading
from pathlib import Path
from typing import Any

from core.base.i18n import t
from desktop.config import Choice, save_choice, saved_choice, saved_secrets

DEFAULT_HUB_ID = "google/gemma-3-4b-it"


def check(form: dict[str, Any], lang: str = "en") -> tuple[Choice, dict[str, str]]:
    """The choice and secrets a submitted form stands for; ValueError with what to fix, in `lang`."""
    way = str(form.get("way", "")).strip()
    if way == "folder":
        folder = Path(str(form.get("folder", "")).strip()).expanduser()
        if not str(folder) or str(folder) == ".":
            raise ValueError(t("firstrun.error.no_folder", lang))
        if not folder.is_dir():
            raise ValueError(t("firstrun.error.folder_missing", lang, folder=folder))
        if not (folder / "config.json").is_file():
            raise ValueError(t("firstrun.error.no_config", lang, folder=folder))
        return Choice(backend="local", model=str(folder.resolve())), {}
    if way == "hub":
        hub_id = str(form.get("hub_id", "")).strip()
        if hub_id.count("/") != 1 or " " in hub_id:
            raise ValueError(t("firstrun.error.hub_id", lang))
        return Choice(backend="local", model=hub_id), {"HF_TOKEN": str(form.get("hf_token", "")).strip()}
    if way == "server":
        base = str(form.get("api_base", "")).strip()
        model = str(form.get("api_model", "")).strip()
        if not base.startswith(("http://", "https://")):
            raise ValueError(t("firstrun.error.address", lang))
        if not model:
            raise ValueError(t("firstrun.error.model", lang))
        return Choice(backend="openai", api_base=base, api_model=model), {
            "REFSHEET_API_KEY": str(form.get("api_key", "")).strip()
        }
    raise ValueError(t("firstrun.error.way", lang))


class FirstRunApi:
    """What the page's script may call (`window.pywebview.api.…`). pywebview shows the page every
    public attribute, hence the underscores: the window and the event are for Python only."""

    def __init__(self, lang: str = "en") -> None:
        self._window: Any = None
        self._saved = threading.Event()
        self._lang = lang

    def choose_folder(self) -> str:
        import webview

        chosen = self._window.create_file_dialog(webview.FileDialog.FOLDER) if self._window else None
        return str(chosen[0]) if chosen else ""

    def save(self, form: dict[str, Any]) -> dict[str, str]:
        try:
            choice, secrets = check(form, self._lang)
        except ValueError as problem:
            return {"error": str(problem)}
        kept = saved_secrets()  # an empty token or key field keeps the saved one
        save_choice(choice, {**kept, **{k: v for k, v in secrets.items() if v}})
        self._saved.set()
        return {"ok": "saved"}


def page(lang: str = "en") -> str:
    """The form in `lang`, filled with what was saved before (never the secrets themselves)."""
    before = saved_choice() or Choice()
    secrets = saved_secrets()
    if before.backend == "openai":
        way = "server"
    elif before.model and not Path(before.model).is_dir():
        way = "hub"
    else:
        way = "folder"
    values = {
        "way": way,
        "folder": before.model if way == "folder" else "",
        "hub_id": before.model if way == "hub" else DEFAULT_HUB_ID,
        "api_base": before.api_base,
        "api_model": before.api_model,
    }
    token_note = t("firstrun.token_saved", lang) if secrets.get("HF_TOKEN") else ""
    key_note = t("firstrun.key_saved", lang) if secrets.get("REFSHEET_API_KEY") else ""
    text = Path(__file__).with_name("firstrun.html").read_text(encoding="utf-8")
    text = text.replace("__TOKEN_NOTE__", html.escape(token_note)).replace("__KEY_NOTE__", html.escape(key_note))
    text = text.replace('<html lang="en">', f'<html lang="{"zh-CN" if lang == "zh" else "en"}">')
    text = re.sub(r"\{\{(\w+)\}\}", lambda m: html.escape(t(f"firstrun.{m.group(1)}", lang)), text)
    return text.replace("__VALUES__", json.dumps(values).replace("<", "\\u003c"))  # inert inside <script>
