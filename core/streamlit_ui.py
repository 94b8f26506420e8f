"""Widgets shared by the pages: UI language, model status, image limits, thumbnails.

Streamlit-aware by design (pages only); the domain logic stays in the plain modules.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import streamlit as st

from core.i18n import UI_LANGUAGES, t, ui_language_for
from core.model import ModelSlot
from core.settings import Settings
from core.sheets import ImageLimits


@st.cache_resource(show_spinner=False)
def app_icon() -> Any:
    """The tab icon, drawn here: a `:material/…:` page icon makes the browser fetch it from Google's
    font servers, and the app contacts no one but the model source."""
    from PIL import Image, ImageDraw

    icon = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    draw = ImageDraw.Draw(icon)
    draw.rounded_rectangle((2, 2, 62, 62), radius=14, fill="#c2417a")
    draw.ellipse((12, 12, 52, 52), fill="#fffafc")
    for (x, y), colour in zip([(22, 22), (38, 20), (44, 34)], ["#c2417a", "#e0a526", "#3f8fc4"], strict=True):
        draw.ellipse((x - 5, y - 5, x + 5, y + 5), fill=colour)
    draw.ellipse((22, 34, 34, 46), fill="#f6edf2")  # the palette's thumb hole
    return icon


def navigation() -> Any:
    """The app's pages: the router `Home.py` runs, and the menu every page shows."""
    st.set_page_config(page_title="RefSheet Chat", page_icon=app_icon(), layout="wide")
    pages = [
        st.Page("pages/home.py", title=t("nav.home", lang()), icon=":material/home:", default=True),
        st.Page("pages/create.py", title=t("nav.create", lang()), icon=":material/add_photo_alternate:"),
        st.Page("pages/library.py", title=t("nav.library", lang()), icon=":material/photo_library:"),
        st.Page("pages/chat.py", title=t("nav.chat", lang()), icon=":material/forum:"),
    ]
    return st.navigation(pages)


_rerouted = False


def through_router() -> None:
    """Make sure this page runs under `Home.py`'s router, even when reached by a deep link.

    Streamlit keeps a process-wide flag for the old `pages/` folder mode that only turns off once
    some session has run `Home.py`. So the first request after a (re)start that is a deep link
    (`/chat?…`) runs the page file on its own: automatic menu, narrow layout. The page then turns
    the flag off and reruns once through the router. That first request is a page load or a
    reconnect, never a click, so no input is lost. (Streamlit internal: `PagesManager`; AppTest
    sets the flag again before every run, hence the once-per-process rerun.)
    """
    global _rerouted
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        if not _rerouted:
            _rerouted = True
            st.rerun()


def lang() -> str:
    """The UI language: the sidebar choice, else the browser's locale."""
    if "ui_lang" not in st.session_state:
        st.session_state.ui_lang = ui_language_for(st.context.locale)
    return st.session_state.ui_lang


def tr(key: str, **params: object) -> str:
    return t(key, lang(), **params)


def language_switch() -> None:
    lang()
    st.sidebar.selectbox(t("ui.language", lang()), list(UI_LANGUAGES), format_func=UI_LANGUAGES.get, key="ui_lang")


def image_limits(settings: Settings) -> ImageLimits:
    return ImageLimits(settings.max_upload_bytes, settings.max_pixels, settings.max_image_side, settings.thumbnail_side)


def local_time(moment: datetime) -> str:
    """A stored UTC time in the browser's time zone; marked UTC where the browser did not say its zone."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # SQLite hands datetimes back naive; they were stored as UTC
    try:
        zone = ZoneInfo(st.context.timezone) if st.context.timezone else None
    except (ZoneInfoNotFoundError, ValueError):
        zone = None
    if zone is None:
        return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    return f"{moment.astimezone(zone):%Y-%m-%d %H:%M}"


def megabytes(n: int) -> str:
    return f"{n / 2**20:,.0f} MB" if n >= 2**20 else f"{n / 1024:,.0f} KB"


def model_status(slot: ModelSlot, *, compact: bool = False) -> None:
    """What the model is doing, and what to do if it cannot load. Never loads it."""
    status = slot.status()
    if status.state == "ready":
        line = tr(
            "model.ready",
            source=status.source,
            quantization=status.quantization,
            device=status.device,
            footprint=megabytes(status.footprint_bytes),
        )
        st.success(line, icon=":material/memory:")
        if status.notice:
            st.warning(status.notice, icon=":material/warning:")
        cache = status.extra
        if cache and not compact:
            st.caption(tr("model.cache", **cache))
    elif status.state == "loading":
        st.info(tr("model.loading", phase=status.phase or "…"), icon=":material/hourglass_top:")
    elif status.state == "failed" and status.error is not None:
        st.error(status.error.message(lang()), icon=":material/error:")
    else:
        st.info(tr("model.not_loaded", source=status.source), icon=":material/bedtime:")
