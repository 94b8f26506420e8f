"""Widgets every page shares: page set-up, the model status, times, uploads, confirmation dialogs."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import streamlit as st

from core.base.lore import Lorebook
from core.base.sheets import PreparedImage, check_uploads
from core.formats.archive import ArchiveError
from core.formats.cards import CardError
from core.model.backend import Backend, BackendStatus
from core.services import characters
from core.services.characters import CardDraft
from core.services.users import save_language
from storage.tables import as_utc
from ui import resources, state
from ui.auth import who_is_here
from ui.language import language_switch, say, tr
from ui.markdown import inert_line
from ui.navigation import through_router
from ui.persona import persona_panel


def unique_labels(labels: dict[int, str]) -> dict[int, str]:
    """Picker labels that can be told apart: a label shared by several ids gets each one's number."""
    uses = Counter(labels.values())
    return {i: f"{label} (#{i})" if uses[label] > 1 else label for i, label in labels.items()}


def fresh_area(key: str, showing: object) -> Any:
    """A container for what `showing` identifies (the conversation on screen). When it changes, the
    previous content is cleared at once, not left greyed out until the run ends (a greeting may
    stream for a minute meanwhile, above the greyed messages and out of view).

    Two slots take turns: the one that held the old content is emptied and the new content goes
    into the other. (Emptying and refilling one slot does not work: Streamlit's message queue
    merges the two updates of one element into the last, so the old content can linger.)"""
    slots = (st.empty(), st.empty())
    turn = state.fresh(key).get((0, showing))
    index = turn[0] if turn[1] == showing else 1 - turn[0]
    state.fresh(key).set((index, showing))
    slots[1 - index].empty()
    return slots[index].container()


def page_setup() -> None:
    """What every page does first: run under the router, offer the language switch, say who is here
    and who they are to the characters."""
    through_router()
    actor = resources.actor()
    language_switch(lambda language: save_language(resources.db(), actor, language))
    who_is_here(resources.db(), actor)
    persona_panel(resources.db(), actor)


def browser_zone() -> ZoneInfo | None:
    """The browser's time zone, where it said one we know."""
    try:
        return ZoneInfo(st.context.timezone) if st.context.timezone else None
    except (ZoneInfoNotFoundError, ValueError):
        return None


def local_time(moment: datetime) -> str:
    """A stored UTC time in the browser's time zone; marked UTC where the browser did not say its zone,
    or where the time is too near the ends of the calendar to move into it (a year-1 date kept from an
    old file would overflow west of UTC, a year-9999 one east of it)."""
    moment, zone = as_utc(moment), browser_zone()
    try:
        if zone is not None:
            return _stamp(moment.astimezone(zone))
    except OverflowError:
        pass
    return f"{_stamp(moment)} UTC"


def _stamp(moment: datetime) -> str:
    return f"{moment.year:04d}-{moment:%m-%d %H:%M}"  # `%Y` leaves out the zeros of a year before 1000


def backend_status(status: BackendStatus, *, compact: bool = False) -> None:
    """What the model is doing, and what to do if it cannot serve. Never loads it.

    `compact` (the chat sidebar): no cache details, and no failure, which the chat shows itself
    beside the conversation with its retry button."""
    if status.state == "failed" and compact:
        return
    if status.state == "ready":
        line = tr("model.connected" if status.remote else "model.ready", description=status.description)
        st.success(line, icon=":material/lan:" if status.remote else ":material/memory:")
        if status.notice:
            st.warning(say(status.notice), icon=":material/warning:")
        if not compact:
            for line in status.details:
                st.caption(say(line))
    elif status.state == "loading":
        st.info(tr("model.loading", phase=say(status.phase) if status.phase else "…"), icon=":material/hourglass_top:")
    elif status.state == "failed" and status.error is not None:
        st.error(say(status.error), icon=":material/error:")
    else:
        st.info(tr("model.not_loaded", source=status.description), icon=":material/bedtime:")


FAILED_RECHECK_SECONDS = 5.0  # a failed status is looked at again this often, so a server back up shows


def live_backend_status(backend: Backend) -> None:
    """The model status, redrawn each second while the model loads (a preload, or someone's first
    reply), and every few seconds while it has failed (a server coming back shows by itself); then the
    page once when that changes."""
    first = backend.status().state
    every = {"loading": 1.0, "failed": FAILED_RECHECK_SECONDS}.get(first)

    @st.fragment(run_every=every)
    def show() -> None:
        status = backend.status()
        backend_status(status)
        if every is not None and status.state != first:
            st.rerun()  # the whole page: what depends on the model (and this timer) is redrawn

    show()


@st.cache_data(show_spinner=False, max_entries=256)
def _other_pictures(key: tuple[object, ...], _extensions: dict[str, Any]) -> list[Any]:
    """Another app's pictures of one character, checked once per version of it (`key`)."""
    return characters.other_pictures({"extensions": _extensions}, resources.limits())


def other_pictures_panel(key: tuple[object, ...], extensions: dict[str, Any]) -> None:
    """The pictures another app's card brought (emotions, backgrounds…), each labelled with its name and
    type: kept and written back in every export, never shown to the model. `key` names this version of
    them (the character and its last change, or the card's upload)."""
    found = _other_pictures(key, extensions)
    if not found:
        return
    st.subheader(tr("library.other_pictures"))
    st.caption(tr("library.other_pictures_why"))
    cols = st.columns(6)
    for i, other in enumerate(found):
        with cols[i % 6]:
            if other.picture is not None:
                picture(other.picture.thumbnail, other.name, caption=inert_line(other.label))
            else:
                st.caption(f"{inert_line(other.label)}: {say(other.error.text) if other.error else '?'}")


def upload_help(key: str) -> str:
    """An uploader's help with the limit the app applies (Streamlit's own caption shows the transport
    ceiling, which is set higher so that an oversized file reaches the app and is refused by name)."""
    return f"{tr(key)} {tr('upload.limit', mb=f'{resources.settings().max_upload_mb:g}')}"


def lore_list(book: Lorebook) -> None:
    """A character book's entries, read-only: what the character may draw on when a talk mentions them."""
    if not book.entries:
        return
    with st.expander(tr("library.book", count=len(book.entries)), icon=":material/menu_book:"):
        for entry in book.entries:
            st.markdown(f"**{inert_line(', '.join(entry.keys)) or tr('library.book_always')}**")
            st.text(entry.content)


@st.cache_data(show_spinner=False, max_entries=4096)
def readable(data: bytes) -> bool:
    """Whether a stored picture decodes whole (asked once per picture per process). A damaged one, in
    a row written by another program or restored before full checks, must not break the page."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception:  # noqa: BLE001 - whatever Pillow raises, it cannot be shown
        return False
    return True


def picture(data: bytes | None, name: str = "", *, into: Any = None, **options: Any) -> None:
    """A stored picture (`options`: `st.image`'s), or, when it cannot be decoded, a placeholder naming
    it: the rest of the page, its Edit and Delete buttons included, is drawn as usual."""
    into = into or st
    if data and readable(data):
        into.image(data, **options)
    else:
        into.warning(tr("image.damaged_shown", name=name or "?"), icon=":material/broken_image:")


def avatar(data: bytes | None) -> bytes | None:
    """A thumbnail fit to be a chat avatar (a damaged one gives the default avatar instead)."""
    return data if data and readable(data) else None


@st.cache_data(show_spinner=False, max_entries=4096)
def square_thumbnail(thumbnail: bytes, background: str = "#ffffff") -> bytes | None:
    """A thumbnail padded to a square, so a row of library cards lines up whatever the art's shape;
    None for one that cannot be decoded."""
    from PIL import Image, ImageOps

    try:
        image = Image.open(io.BytesIO(thumbnail)).convert("RGB")
    except Exception:  # noqa: BLE001 - a damaged thumbnail: the card shows a placeholder
        return None
    side = max(image.size)
    buf = io.BytesIO()
    ImageOps.pad(image, (side, side), color=background).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def checked_uploads(files: Sequence[Any], *, remember: bool = True) -> tuple[list[PreparedImage], list[str]]:
    """Uploaded files through the one validator, with each problem as a message in the viewer's language.

    `remember`: prepare each file once per browser session (by its upload id) instead of on every
    rerun, for forms that show previews while the user keeps typing."""
    limits = resources.limits()
    cache: dict[Any, Any] = state.PREPARED_UPLOADS.setdefault({}) if remember else {}
    good: list[PreparedImage] = []
    errors: list[str] = []
    for f in files:
        key = (f.file_id, limits)
        if key not in cache:
            images, rejected = check_uploads([(f.name, f.getvalue())], limits)
            cache[key] = images[0] if images else rejected[0]
        result = cache[key]
        if isinstance(result, PreparedImage):
            good.append(result)
        else:
            errors.append(say(result))
    return good, errors


def card_upload(file: Any) -> CardDraft | CardError | ArchiveError:
    """An uploaded character card (PNG, JSON or CHARX), read once per upload (its pictures are prepared
    like any image)."""
    drafts: dict[str, Any] = state.CARD_DRAFTS.setdefault({})
    if file.file_id not in drafts:
        try:
            drafts[file.file_id] = characters.read_card_file(file.getvalue(), file.name, resources.limits())
        except (CardError, ArchiveError) as exc:
            drafts[file.file_id] = exc
    return drafts[file.file_id]


def forget_uploads() -> None:
    """Stored now: free the prepared copies."""
    state.PREPARED_UPLOADS.pop()
    state.CARD_DRAFTS.pop()


def ask_to_confirm(key: str, **context: Any) -> None:
    """Open the confirmation dialog `key` on the next run, with `context` for its text and action."""
    state.confirm(key).set(context)


def confirmation(
    key: str, title: str, body: Callable[..., str], on_yes: Callable[..., None], yes_label: str = ""
) -> None:
    """The one confirm dialog: shown while asked for, with a destructive Yes and a Cancel."""
    asked = state.confirm(key)
    context = asked.get()
    if context is None:
        return

    def forget() -> None:
        asked.pop()

    @st.dialog(title, on_dismiss=forget)
    def dialog() -> None:
        st.write(body(**context))
        yes, no = st.columns(2)
        if yes.button(
            yes_label or tr("common.delete"), type="primary", icon=":material/delete:", key=state.key.confirm_yes(key)
        ):
            forget()
            on_yes(**context)
            st.rerun()
        if no.button(tr("common.cancel"), key=state.key.confirm_no(key)):
            forget()
            st.rerun()

    dialog()
