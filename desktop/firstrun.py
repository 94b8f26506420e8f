"""The first-run screen, and the "Choose the model…" dialog: which model answers. Shown in the window
before the server starts when nothing says which model to use (no saved choice, no REFSHEET_MODEL /
REFSHEET_BACKEND / REFSHEET_API_BASE / REFSHEET_GGUF_*), with `--setup`, and as a dialog of its own from
the window's menu (the running server is left alone until Start; Cancel changes nothing).

Five ways: a GGUF model (llama.cpp) as files on this computer (the model and its vision projector,
`mmproj`, found by itself beside the model) or from a hub repository; a Gemma 3 checkpoint folder or hub
id (transformers: offered where this build has that engine); or an OpenAI-compatible model server. The
choice is saved per user (`desktop.config`), and the model then starts loading in the background
(REFSHEET_PRELOAD). The form fits a small screen: only the chosen way is open, and Start (with Cancel in
the dialog) stays in a bar at the bottom however far the form scrolls.
"""

from __future__ import annotations

import html
import importlib.util
import json
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.base.i18n import t
from core.base.settings import Settings
from desktop.config import Choice, config_dir, save_choice, saved_choice, saved_secrets

DEFAULT_HUB_ID = "google/gemma-3-4b-it"
GGUF_DEFAULTS = Settings()  # the hub repository and file names the llama.cpp backend uses by default
WAYS = ("gguf_files", "gguf_hub", "folder", "hub", "server")

# The form's boxes as the window shows them (CSS pixels from the top left of the page's view): the
# window reports them (REFSHEET_DESKTOP_STATUS), so a test can check that Start is on screen and press it.
BOXES_JS = (
    "(function(){if(document.readyState!=='complete'||!document.getElementById('start'))return '';"
    "function box(id){var e=document.getElementById(id);if(!e||e.hidden)return null;var r=e.getBoundingClientRect();"
    "return {x:r.left,y:r.top,width:r.width,height:r.height};}"
    "return JSON.stringify({start:box('start'),cancel:box('cancel'),view:{width:innerWidth,height:innerHeight},"
    "way:(document.querySelector('input[name=way]:checked')||{}).value||''});})()"
)


def engines() -> dict[str, bool]:
    """Which in-process engines this app has: llama.cpp ("gguf") and transformers ("local"). The default
    desktop build has llama.cpp only."""

    def has(*modules: str) -> bool:
        try:
            return all(importlib.util.find_spec(m) is not None for m in modules)
        except (ImportError, ValueError):
            return False

    return {"gguf": has("llama_cpp"), "local": has("torch", "transformers")}


def is_gguf(path: Path) -> bool:
    """A GGUF file starts with the four bytes "GGUF"."""
    try:
        with path.open("rb") as fh:
            return fh.read(4) == b"GGUF"
    except OSError:
        return False


def projector_beside(model: Path) -> Path | None:
    """The vision projector lying beside a model file (one `*mmproj*.gguf` in its folder), as LM Studio and
    the hub's GGUF repositories keep them."""
    found = sorted(p for p in model.parent.glob("*.gguf") if "mmproj" in p.name.lower() and p != model)
    return found[0] if len(found) == 1 else None


def _field(form: dict[str, Any], name: str) -> str:
    return str(form.get(name, "")).strip()


def _path(form: dict[str, Any], name: str) -> Path:
    """The path typed in a field, `~` expanded; as typed where it names a user this computer does not have
    (`~nobody/…`: `expanduser` raises), which the checks then report as not found."""
    path = Path(_field(form, name))
    try:
        return path.expanduser()
    except RuntimeError:
        return path


def _gguf_file(form: dict[str, Any], name: str, lang: str) -> Path:
    path = _path(form, name)
    if not path.is_file():
        raise ValueError(t("firstrun.error.gguf_missing", lang, file=path))
    if not is_gguf(path):
        raise ValueError(t("firstrun.error.not_gguf", lang, file=path))
    return path.resolve()


def check(
    form: dict[str, Any], lang: str = "en", available: dict[str, bool] | None = None
) -> tuple[Choice, dict[str, str]]:
    """The choice and secrets a submitted form stands for; ValueError with what to fix, in `lang`.
    `available`: the engines this app has (`engines()`)."""
    available = engines() if available is None else available
    way = _field(form, "way")
    if way in ("folder", "hub") and not available.get("local"):
        raise ValueError(t("firstrun.error.no_transformers", lang))
    if way == "gguf_files":
        if not _field(form, "gguf_model"):
            raise ValueError(t("firstrun.error.no_gguf", lang))
        model = _gguf_file(form, "gguf_model", lang)
        if _field(form, "gguf_mmproj"):
            mmproj = _gguf_file(form, "gguf_mmproj", lang)
        elif (beside := projector_beside(model)) is not None:
            mmproj = beside.resolve()
        else:
            raise ValueError(t("firstrun.error.no_mmproj", lang, file=model.name))
        return Choice(backend="gguf", gguf_model=str(model), gguf_mmproj=str(mmproj)), {}
    if way == "gguf_hub":
        repo = _field(form, "gguf_repo")
        if repo.count("/") != 1 or " " in repo:
            raise ValueError(t("firstrun.error.gguf_repo", lang))
        names = _field(form, "gguf_file"), _field(form, "gguf_mmproj_file")
        if not all(n.lower().endswith(".gguf") for n in names):
            raise ValueError(t("firstrun.error.gguf_names", lang))
        choice = Choice(backend="gguf", gguf_repo=repo, gguf_file=names[0], gguf_mmproj_file=names[1])
        return choice, {"HF_TOKEN": _field(form, "hf_token")}
    if way == "folder":
        folder = _path(form, "folder")
        if not str(folder) or str(folder) == ".":
            raise ValueError(t("firstrun.error.no_folder", lang))
        if not folder.is_dir():
            raise ValueError(t("firstrun.error.folder_missing", lang, folder=folder))
        if not (folder / "config.json").is_file():
            raise ValueError(t("firstrun.error.no_config", lang, folder=folder))
        return Choice(backend="local", model=str(folder.resolve())), {}
    if way == "hub":
        hub_id = _field(form, "hub_id")
        if hub_id.count("/") != 1 or " " in hub_id:
            raise ValueError(t("firstrun.error.hub_id", lang))
        return Choice(backend="local", model=hub_id), {"HF_TOKEN": _field(form, "hf_token")}
    if way == "server":
        base, model = _field(form, "api_base"), _field(form, "api_model")
        if not base.startswith(("http://", "https://")):
            raise ValueError(t("firstrun.error.address", lang))
        if not model:
            raise ValueError(t("firstrun.error.model", lang))
        return Choice(backend="openai", api_base=base, api_model=model), {"REFSHEET_API_KEY": _field(form, "api_key")}
    raise ValueError(t("firstrun.error.way", lang))


class FirstRunApi:
    """What the form's script may call (`window.pywebview.api.…`). pywebview shows the page every public
    attribute, hence the underscores: the window and the callbacks are for Python only. `on_saved` runs
    once a choice is saved, `on_cancel` when Cancel is pressed (the dialog; None: the form has no Cancel)."""

    def __init__(self, lang: str = "en", on_saved: Callable[[], None] | None = None,
                 on_cancel: Callable[[], None] | None = None) -> None:  # fmt: skip
        self._window: Any = None
        self._saved = threading.Event()
        self._lang = lang
        self._on_saved = on_saved
        self._on_cancel = on_cancel

    def choose_folder(self) -> str:
        import webview

        chosen = self._window.create_file_dialog(webview.FileDialog.FOLDER) if self._window else None
        return str(chosen[0]) if chosen else ""

    def choose_file(self, kind: str = "model") -> dict[str, str]:
        """A .gguf file from the system's file dialog; for the model, also the projector beside it."""
        import webview

        types = ("GGUF (*.gguf)", "All files (*.*)")
        chosen = self._window.create_file_dialog(webview.FileDialog.OPEN, file_types=types) if self._window else None
        if not chosen:
            return {}
        path = Path(str(chosen[0] if isinstance(chosen, list | tuple) else chosen))
        beside = projector_beside(path) if kind == "model" else None
        return {"path": str(path), "mmproj": str(beside) if beside else ""}

    def save(self, form: dict[str, Any]) -> dict[str, str]:
        try:
            choice, secrets = check(form, self._lang)
        except ValueError as problem:
            return {"error": str(problem)}
        kept = saved_secrets()  # an empty token or key field keeps the saved one
        try:  # a config folder that cannot be written, a value that cannot be: said on the form, not lost
            save_choice(choice, {**kept, **{k: v for k, v in secrets.items() if v}})
        except (OSError, ValueError) as problem:
            return {"error": t("firstrun.error.save", self._lang, folder=config_dir(), problem=problem)}
        self._saved.set()
        if self._on_saved is not None:
            threading.Thread(target=self._on_saved, daemon=True).start()  # not inside the page's call
        return {"ok": "saved"}

    def cancel(self) -> dict[str, str]:
        if self._on_cancel is not None:
            threading.Thread(target=self._on_cancel, daemon=True).start()
        return {"ok": "cancelled"}


def _initial_way(before: Choice | None, available: dict[str, bool]) -> str:
    if before is None:
        return "gguf_files" if available["gguf"] else "folder" if available["local"] else "server"
    if before.backend == "openai":
        return "server"
    if before.backend == "gguf":
        return "gguf_files" if before.gguf_model else "gguf_hub"
    return "hub" if before.model and not Path(before.model).is_dir() else "folder"


def page(lang: str = "en", dialog: bool = False, can_cancel: bool | None = None) -> str:
    """The form in `lang`, filled with what was saved before (never the secrets themselves). `dialog`: the
    menu's "Choose the model…" (its own title); `can_cancel`: show Cancel (default: in the dialog)."""
    before = saved_choice()
    secrets = saved_secrets()
    available = engines()
    way = _initial_way(before, available)
    before = before or Choice()
    values = {
        "way": way,
        "folder": before.model if way == "folder" else "",
        "hub_id": before.model if way == "hub" else DEFAULT_HUB_ID,
        "gguf_model": before.gguf_model,
        "gguf_mmproj": before.gguf_mmproj,
        "gguf_repo": before.gguf_repo or GGUF_DEFAULTS.gguf_repo,
        "gguf_file": before.gguf_file or GGUF_DEFAULTS.gguf_file,
        "gguf_mmproj_file": before.gguf_mmproj_file or GGUF_DEFAULTS.gguf_mmproj_file,
        "api_base": before.api_base,
        "api_model": before.api_model,
        "unavailable": [w for w in ("folder", "hub") if not available["local"]]
        + [w for w in ("gguf_files", "gguf_hub") if not available["gguf"]],
        "cancel": dialog if can_cancel is None else can_cancel,
        "dialog": dialog,
    }
    token_note = t("firstrun.token_saved", lang) if secrets.get("HF_TOKEN") else ""
    key_note = t("firstrun.key_saved", lang) if secrets.get("REFSHEET_API_KEY") else ""
    text = Path(__file__).with_name("firstrun.html").read_text(encoding="utf-8")
    text = text.replace("__TOKEN_NOTE__", html.escape(token_note)).replace("__KEY_NOTE__", html.escape(key_note))
    text = text.replace("__HEADING__", html.escape(t("desktop.dialog_title", lang) if dialog else "RefSheet Chat"))
    text = text.replace('<html lang="en">', f'<html lang="{"zh-CN" if lang == "zh" else "en"}">')
    text = re.sub(r"\{\{(\w+)\}\}", lambda m: html.escape(t(f"firstrun.{m.group(1)}", lang)), text)
    return text.replace("__VALUES__", json.dumps(values).replace("<", "\\u003c"))  # inert inside <script>
