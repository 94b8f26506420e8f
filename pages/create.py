"""Create: upload a reference sheet (and more pictures), add notes, pick the reply language."""

import streamlit as st

from core.base.errors import UserError
from core.base.lore import Lorebook
from core.base.profile import EDITABLE
from core.base.sheets import UPLOAD_EXTENSIONS
from core.services import characters
from ui import resources
from ui.draft import apply_draft, draft_controls
from ui.language import reply_language, say, tr
from ui.markdown import inert_line
from ui.profile_form import profile_inputs, shown_value
from ui.widgets import card_upload, checked_uploads, forget_uploads, lore_list, page_setup, upload_help

BASICS = ("name", "notes", "language")
MORE = tuple(name for name in EDITABLE if name not in BASICS)  # every other field a card can bring

page_setup()
db, actor, backend = resources.db(), resources.actor(), resources.backend()
st.title(tr("create.title"))

if created := st.session_state.get("created_character"):
    st.success(tr("create.done", name=created["name"]), icon=":material/check_circle:")
    go, again = st.columns(2)
    go.page_link(
        "pages/chat.py",
        label=tr("create.start_chatting"),
        icon=":material/forum:",
        query_params={"character": created["id"]},
    )
    if again.button(tr("create.another"), icon=":material/add:"):
        del st.session_state["created_character"]
        st.session_state.create_form += 1
        st.rerun()
    st.stop()

form = st.session_state.setdefault("create_form", 0)  # bump to clear every widget after a create

# A SillyTavern card is an optional shortcut, so it comes first: it fills the form below, and its
# picture is the main sheet unless one is uploaded.
with st.expander(tr("create.import_card"), icon=":material/badge:"):
    card_file = st.file_uploader(tr("create.import_card"), type=["png", "json", "charx"], key=f"card_{form}",
                                 label_visibility="collapsed")  # fmt: skip
card_profile: dict = {}
card_sheet, card_extras = [], []  # the card's picture, and its other reference images
if card_file is not None:
    draft = card_upload(card_file)
    if isinstance(draft, UserError):  # not a card, or an unsafe CHARX zip
        st.error(say(draft), icon=":material/badge:")
    else:
        card_profile = {"language": reply_language(), **draft.profile}
        if st.session_state.get(f"card_applied_{form}") != card_file.file_id:  # fill the form once per card
            st.session_state[f"card_applied_{form}"] = card_file.file_id
            for name in BASICS + MORE:
                st.session_state[f"{name}_{form}"] = shown_value(name, card_profile.get(name))
        st.success(tr("create.card_loaded", name=card_profile["name"]), icon=":material/badge:")
        for warning in draft.warnings:
            st.warning(say(warning), icon=":material/badge:")
        card_sheet = [draft.picture] if draft.picture else []
        card_extras = list(draft.extra_pictures)  # stored after the main sheet, before uploaded extras
        if draft.picture_error:
            st.error(say(draft.picture_error), icon=":material/broken_image:")

main_file = st.file_uploader(
    tr("create.main_sheet"), type=UPLOAD_EXTENSIONS, help=upload_help("create.main_help"), key=f"main_{form}"
)
extra_files = st.file_uploader(
    tr("create.extra_images"),
    type=UPLOAD_EXTENSIONS,
    accept_multiple_files=True,
    help=upload_help("create.extra_help"),
    key=f"extra_{form}",
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

apply_draft(form)  # a draft from "Read the sheet" fills the inputs below, before they are drawn
draft_controls(backend, form, main_images + extra_images)
profile = profile_inputs(BASICS, {"language": reply_language()}, key_suffix=form)
with st.expander(tr("create.more"), expanded=bool(card_profile)):
    profile |= profile_inputs(MORE, key_suffix=form)
lore_list(Lorebook.from_card(card_profile.get("character_book")))

if st.button(tr("create.submit"), type="primary", icon=":material/person_add:"):
    if errors:
        st.error(tr("create.fix_uploads"), icon=":material/error:")
    else:
        try:  # every field of an imported card is kept; what the form shows wins
            character = characters.create(db, actor, {**card_profile, **profile}, main_images + extra_images)
        except UserError as exc:
            st.error(say(exc), icon=":material/image:")
        else:
            characters.warm_up(db, actor, backend, character.id)  # a loaded model reads the sheets now
            st.session_state.created_character = {"id": character.id, "name": character.name or tr("common.unnamed")}
            forget_uploads()
            st.rerun()
