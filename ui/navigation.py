"""The app's pages and the once-per-process fix that keeps deep links under the router."""

from __future__ import annotations

from typing import Any

import streamlit as st

from core.services.users import NotAllowed
from ui import resources
from ui.auth import not_allowed_page, sign_in_page, signed_in_actor
from ui.language import tr


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
    """The app's pages: the router `Home.py` runs, and the menu every page shows. With sign-in on, a
    visitor who is not signed in (or not let in) gets one page that says so, and nothing else."""
    st.set_page_config(page_title="RefSheet Chat", page_icon=app_icon(), layout="wide")
    current = signed_in_actor(resources.db(), resources.settings())
    if current is None:
        return st.navigation([st.Page(sign_in_page, title=tr("auth.sign_in"), icon=":material/login:", default=True)])
    if isinstance(current, NotAllowed):

        def not_allowed() -> None:
            not_allowed_page(current)

        return st.navigation([st.Page(not_allowed, title=tr("auth.sign_in"), icon=":material/block:", default=True)])
    pages = [
        st.Page("pages/home.py", title=tr("nav.home"), icon=":material/home:", default=True),
        st.Page("pages/create.py", title=tr("nav.create"), icon=":material/add_photo_alternate:"),
        st.Page("pages/library.py", title=tr("nav.library"), icon=":material/photo_library:"),
        st.Page("pages/chat.py", title=tr("nav.chat"), icon=":material/forum:"),
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
