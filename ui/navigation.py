"""The router: the app's pages, and the one way every page runs (under `route`, even after a deep link)."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import streamlit as st
from streamlit.errors import FragmentHandledException

from core.base.errors import UserError
from core.base.settings import SettingsError
from core.services.users import Actor, NotAllowed
from ui import resources
from ui.auth import not_allowed_page, sign_in_page, signed_in_actor
from ui.language import adopt, say, tr
from ui.server import unexpected


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
    if isinstance(current, Actor):
        adopt(current.ui_language)  # their saved language, before the menu is drawn in it
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


_ROUTED: ContextVar[bool] = ContextVar("refsheet_routed", default=False)


def route() -> None:
    """Run the page the URL names, under the router: all `Home.py` does. With REFSHEET_PRELOAD the model
    starts loading at the first page view, whichever page; an error a page did not catch (a full disk,
    say) is said plainly, never as a traceback; so is a setting that cannot be used, in the reader's
    language, on whatever page was asked for."""
    routed = _ROUTED.set(True)
    try:
        if resources.settings().preload:
            resources.backend()
        navigation().run()
    except UserError as problem:
        st.error(say(problem), icon=":material/error:")
    except SettingsError as problem:
        said = say(problem.text) if problem.text else tr("settings.error.other", reason=str(problem))
        st.error(said, icon=":material/settings:")
    except FragmentHandledException:
        raise  # a fragment's error, already shown (with its id) where the fragment is
    except Exception as exc:  # noqa: BLE001 - not expected: an error id for the person, the traceback logged
        unexpected(exc)
    finally:
        _ROUTED.reset(routed)


def through_router() -> None:
    """Make sure this page runs under the router, even when a deep link reached it first.

    Streamlit runs a page file on its own (its old `pages/` folder mode: an automatic menu, a narrow
    layout) when a deep link (`/chat?…`) is the first request of a server process, because a `pages/`
    folder sits beside `Home.py`; the first call of `st.navigation` ends that mode for the process. A
    page that finds itself outside the router (`route` marks the runs it makes) runs the router here,
    in this same run, and stops when it is done: the page is drawn once, under the router, with
    whatever the user clicked or typed still there. (A `st.rerun()` instead would drop that input,
    and Streamlit's AppTest starts every run in the old mode.)"""
    if not _ROUTED.get():
        route()
        st.stop()
