"""Create: upload a reference sheet (and more pictures), add notes, pick the reply language."""

from typing import Any

import streamlit as st

from core.base.errors import UserError
from core.base.lore import Lorebook
from core.base.profile import EDITABLE
from core.base.sheets import UPLOAD_EXTENSIONS
from core.services import characters
from ui import resources, state
from ui.character_form import Submit, character_form
from ui.language import reply_language, say, tr
from ui.markdown import inert_line
from ui.profile_form import shown_value
from ui.state import ChatView
from ui.widgets import card_upload, checked_uploads, forget_uploads, other_pictures_panel, page_setup, upload_help

BASICS = ("name", "notes", "language")
MORE = tuple(name for name in EDITABLE if name not in BASICS)  # every other field a card can bring

page_setup()
db, actor, backend = resources.db(), resources.actor(), resources.backend()
st.title(tr("create.title"))

if created := state.CREATED.get():
    st.success(tr("create.done", name=created["name"]), icon=":material/check_circle:")
    go, again = st.columns(2)
    go.page_link(
        "pages/chat.py",
        label=tr("create.start_chatting"),
        icon=":material/forum:",
        query_params=ChatView(character=created["id"]).query,
    )
    if again.button(tr("create.another"), icon=":material/add:"):
        state.CREATED.pop()
        state.CREATE_FORM.set(state.CREATE_FORM.get(0) + 1)
        st.rerun()
    st.stop()

form = state.CREATE_FORM.setdefault(0)  # bump to clear every widget after a create

# A SillyTavern card is an optional shortcut, so it comes first: it fills the form below, and its
# picture is the main sheet unless one is uploaded.
with st.expander(tr("create.import_card"), icon=":material/badge:"):
    card_file = st.file_uploader(tr("create.import_card"), type=["png", "json", "charx"], key=state.key.card(form),
                                 label_visibility="collapsed")  # fmt: skip
card_profile: dict = {}
card_sheet, card_extras = [], []  # the card's picture, and its other reference images
if card_file is not None:
    draft = card_upload(card_file)
    if isinstance(draft, UserError):  # not a card, or an unsafe CHARX zip
        st.error(say(draft), icon=":material/badge:")
    else:
        card_profile = {"language": reply_language(), **draft.profile}
        if state.card_applied(form).get() != card_file.file_id:  # fill the form once per card
            state.card_applied(form).set(card_file.file_id)
            for name in BASICS + MORE:
                state.field(name, form).set(shown_value(name, card_profile.get(name)))
        st.success(tr("create.card_loaded", name=card_profile["name"]), icon=":material/badge:")
        for warning in draft.warnings:
            st.warning(say(warning), icon=":material/badge:")
        card_sheet = [draft.picture] if draft.picture else []
        card_extras = list(draft.extra_pictures)  # stored after the main sheet, before uploaded extras
        if draft.picture_error:
            st.error(say(draft.picture_error), icon=":material/broken_image:")
        other_pictures_panel(("card", card_file.file_id), draft.profile.get("extensions") or {})

main_file = st.file_uploader(
    tr("create.main_sheet"),
    type=UPLOAD_EXTENSIONS,
    help=upload_help("create.main_help"),
    key=state.key.main_sheet(form),
)
extra_files = st.file_uploader(
    tr("create.extra_images"),
    type=UPLOAD_EXTENSIONS,
    accept_multiple_files=True,
    help=upload_help("create.extra_help"),
    key=state.key.extra_images(form),
)
main_images, errors = checked_uploads([main_file] if main_file else [])
main_images = main_images or ([] if main_file else card_sheet)
extra_images, extra_errors = checked_uploads(extra_files or [])
extra_images = card_extras + extra_images
errors += extra_errors
for message in errors:
    st.error(message, icon=":material/broken_image:")
if main_images or extra_images:
    previews = st.columns(6)
    for i, image in enumerate(main_images + extra_images):
        caption = tr("create.main_caption") if i == 0 and main_images else inert_line(image.original_name)
        if image in card_sheet or image in card_extras:
            caption = f"{caption} · {tr('create.card_picture')}"
        previews[i % 6].image(image.thumbnail, caption=caption)


def create(profile: dict[str, Any]) -> None:
    """Store the character: every field of an imported card is kept, and what the form shows wins."""
    if errors:
        st.error(tr("create.fix_uploads"), icon=":material/error:")
        return
    try:
        character = characters.create(db, actor, {**card_profile, **profile}, main_images + extra_images)
    except UserError as exc:
        st.error(say(exc), icon=":material/image:")
        return
    characters.warm_up(db, actor, backend, character.id)  # a loaded model reads the sheets now
    state.CREATED.set({"id": character.id, "name": character.name or tr("common.unnamed")})
    forget_uploads()
    st.rerun()


character_form(
    backend,
    form,
    main_images + extra_images,
    fields=BASICS,
    more=MORE,
    more_open=bool(card_profile),
    values={"language": reply_language()},
    book=Lorebook.from_card(card_profile.get("character_book")),
    submit=Submit(tr("create.submit"), ":material/person_add:", create),
)
