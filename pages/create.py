"""Create: upload a reference sheet (and more pictures), add notes, pick the reply language."""

import streamlit as st

from core.cards import CardError, profile_from_card, read_card
from core.markdown import inert
from core.prompts import DEFAULT_LANGUAGE, REPLY_LANGUAGES
from core.resources import engine, settings
from core.sheets import UPLOAD_EXTENSIONS, ImageRejected, PreparedImage, prepare_image
from core.streamlit_ui import image_limits, lang, language_switch, through_router, tr
from storage import characters as chars
from storage.db import session_scope

through_router()
language_switch()
st.title(tr("create.title"))
limits = image_limits(settings())


def checked(files) -> tuple[list[PreparedImage], list[str]]:
    """Validate uploads as they arrive, so problems show before anything is saved.

    Each upload is prepared once (by its file id), not again on every rerun of the page."""
    prepared: dict = st.session_state.setdefault("prepared_uploads", {})
    good, errors = [], []
    for f in files:
        key = (f.file_id, limits)
        if key not in prepared:
            try:
                prepared[key] = prepare_image(f.getvalue(), f.name, limits)
            except ImageRejected as exc:
                prepared[key] = exc
        result = prepared[key]
        if isinstance(result, ImageRejected):
            errors.append(result.message(lang()))
        else:
            good.append(result)
    return good, errors


if created := st.session_state.get("created_character"):
    st.success(tr("create.done", name=inert(created["name"])), icon=":material/check_circle:")
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
main_file = st.file_uploader(
    tr("create.main_sheet"), type=UPLOAD_EXTENSIONS, help=tr("create.main_help"), key=f"main_{form}"
)
extra_files = st.file_uploader(
    tr("create.extra_images"),
    type=UPLOAD_EXTENSIONS,
    accept_multiple_files=True,
    help=tr("create.extra_help"),
    key=f"extra_{form}",
)

# A SillyTavern card is an optional shortcut: it fills the form and its picture can be the sheet.
with st.expander(tr("create.import_card"), icon=":material/badge:"):
    card_file = st.file_uploader(tr("create.import_card"), type=["png", "json"], key=f"card_{form}",
                                 label_visibility="collapsed")  # fmt: skip
card_profile: dict = {}
card_sheet: list[PreparedImage] = []
if card_file is not None:
    try:
        card = read_card(card_file.getvalue(), card_file.name)
    except CardError as exc:
        st.error(exc.message(lang()), icon=":material/badge:")
    else:
        card_profile = profile_from_card(card)
        if st.session_state.get(f"card_applied_{form}") != card_file.file_id:  # fill the form once per card
            st.session_state[f"card_applied_{form}"] = card_file.file_id
            for field in ("name", "notes", "first_mes", "personality", "scenario"):
                st.session_state[f"{field}_{form}"] = card_profile.get(field, "")
            if card_profile.get("language") in REPLY_LANGUAGES:
                st.session_state[f"language_{form}"] = card_profile["language"]
        st.success(tr("create.card_loaded", name=inert(card_profile["name"])), icon=":material/badge:")
        if card.image:
            card_sheet, card_errors = checked([card_file])
            for message in card_errors:
                st.error(message, icon=":material/broken_image:")

main_images, errors = checked([main_file] if main_file else [])
main_images = main_images or ([] if main_file else card_sheet)
extra_images, extra_errors = checked(extra_files or [])
errors += extra_errors
for message in errors:
    st.error(message, icon=":material/broken_image:")
if main_images or extra_images:
    previews = st.columns(6)
    for i, image in enumerate(main_images + extra_images):
        caption = tr("create.main_caption") if i == 0 and main_images else image.original_name
        if image in card_sheet:
            caption = f"{caption} · {tr('create.card_picture')}"
        previews[i % 6].image(image.thumbnail, caption=caption)

name = st.text_input(tr("create.name"), placeholder=tr("create.name_placeholder"), key=f"name_{form}")
notes = st.text_area(tr("create.notes"), placeholder=tr("create.notes_placeholder"), key=f"notes_{form}")
language = st.selectbox(
    tr("create.language"),
    list(REPLY_LANGUAGES),
    index=list(REPLY_LANGUAGES).index(DEFAULT_LANGUAGE),
    key=f"language_{form}",
)
with st.expander(tr("create.more")):
    greeting = st.text_area(tr("field.first_mes"), help=tr("create.greeting_help"), key=f"first_mes_{form}")
    personality = st.text_area(tr("field.personality"), key=f"personality_{form}")
    scenario = st.text_area(tr("field.scenario"), key=f"scenario_{form}")

if st.button(tr("create.submit"), type="primary", icon=":material/person_add:"):
    if not main_images and not errors:
        st.error(tr("create.need_main"), icon=":material/image:")
    elif errors:
        st.error(tr("create.fix_uploads"), icon=":material/error:")
    else:
        with session_scope(engine()) as session:
            form_fields = {"name": name.strip(), "notes": notes.strip(), "language": language,
                           "first_mes": greeting.strip(), "personality": personality.strip(),
                           "scenario": scenario.strip()}  # fmt: skip
            # Every field of an imported card is kept; what the form shows wins.
            character = chars.create_character(session, main_images + extra_images, **{**card_profile, **form_fields})
            st.session_state.created_character = {"id": character.id, "name": character.name or tr("common.unnamed")}
        st.session_state.pop("prepared_uploads", None)  # stored now; free the memory
        st.rerun()
