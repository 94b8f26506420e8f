"""Library: every character as a card; search, edit (fields and images), duplicate, delete, chat."""

import streamlit as st
from sqlmodel import Session

from core.cards import write_card_png
from core.lore import Lorebook
from core.markdown import inert
from core.prompts import REPLY_LANGUAGES
from core.resources import engine, settings
from core.sheets import UPLOAD_EXTENSIONS, ImageRejected, prepare_image
from core.streamlit_ui import image_limits, lang, language_switch, local_time, through_router, tr
from storage import characters as chars
from storage.db import session_scope

GREETING_SEPARATOR = "\n---\n"

through_router()
language_switch()
st.title(tr("library.title"))
db = engine()


def close_editor() -> None:
    st.session_state.pop("editing", None)


def forget_delete() -> None:
    st.session_state.pop("confirm_delete", None)


@st.dialog(tr("library.delete_title"), on_dismiss=forget_delete)
def confirm_delete(character_id: int, name: str, conversations: int) -> None:
    st.write(tr("library.delete_body", name=inert(name), count=conversations))
    yes, no = st.columns(2)
    if yes.button(tr("common.delete"), type="primary", icon=":material/delete:", key="confirm_delete_yes"):
        with session_scope(db) as session:
            chars.delete_character(session, character_id)
        forget_delete()
        if st.session_state.get("editing") == character_id:
            close_editor()
        st.toast(tr("library.deleted", name=inert(name)), icon=":material/delete:")
        st.rerun()
    if no.button(tr("common.cancel"), key="confirm_delete_no"):
        forget_delete()
        st.rerun()


def editor(character_id: int) -> None:
    """Edit one character's profile fields and reference images."""
    with Session(db) as session:
        character = chars.get_character(session, character_id)
        images = chars.get_thumbnails(session, character_id)
    if character is None:
        close_editor()
        st.rerun()
    st.button(tr("library.back"), icon=":material/arrow_back:", on_click=close_editor)
    st.subheader(inert(character.name) or tr("common.unnamed"))

    with st.form(f"edit_{character_id}"):
        name = st.text_input(tr("create.name"), character.name)
        notes = st.text_area(tr("create.notes"), character.notes)
        languages = list(REPLY_LANGUAGES)
        if character.language not in languages:
            languages.append(character.language)
        language = st.selectbox(tr("create.language"), languages, index=languages.index(character.language))
        first_mes = st.text_area(tr("field.first_mes"), character.first_mes)
        alternates = st.text_area(
            tr("field.alternate_greetings"),
            GREETING_SEPARATOR.join(character.alternate_greetings),
            help=tr("library.alternates_help"),
        )
        fields = {
            key: st.text_area(tr(f"field.{key}"), getattr(character, key))
            for key in (
                "description",
                "personality",
                "scenario",
                "mes_example",
                "system_prompt",
                "post_history_instructions",
                "creator_notes",
            )
        }
        tags = st.text_input(tr("field.tags"), ", ".join(character.tags))
        creator = st.text_input(tr("field.creator"), character.creator)
        version = st.text_input(tr("field.character_version"), character.character_version)
        if st.form_submit_button(tr("common.save"), type="primary", icon=":material/save:"):
            with session_scope(db) as session:
                chars.update_character(
                    session,
                    character_id,
                    name=name.strip(),
                    notes=notes.strip(),
                    language=language,
                    first_mes=first_mes.strip(),
                    creator=creator.strip(),
                    character_version=version.strip(),
                    alternate_greetings=[g.strip() for g in alternates.split(GREETING_SEPARATOR.strip()) if g.strip()],
                    tags=[t.strip() for t in tags.split(",") if t.strip()],
                    **{k: v.strip() for k, v in fields.items()},
                )
            st.toast(tr("library.saved"), icon=":material/save:")
            st.rerun()

    def card_png() -> bytes:
        """Built only when the button is clicked: re-encoding the sheet on every rerun would be wasted."""
        with Session(db) as session:
            sheet = chars.get_main_image(session, character_id)
            return write_card_png(chars.get_character(session, character_id), sheet.data)

    st.download_button(tr("library.export_card"), data=card_png, file_name=f"{character.name or 'character'}.png",
                       mime="image/png", icon=":material/download:")  # fmt: skip

    book = Lorebook.from_card(character.character_book)
    if book.entries:  # from an imported card; shown so the user knows what the character may draw on
        with st.expander(tr("library.book", count=len(book.entries)), icon=":material/menu_book:"):
            for entry in book.entries:
                st.markdown(f"**{inert(', '.join(entry.keys)) or tr('library.book_always')}**")
                st.text(entry.content)

    st.subheader(tr("library.images"))
    cols = st.columns(4)
    for i, image in enumerate(images):
        with cols[i % 4].container(border=True):
            st.image(image.thumbnail, caption=tr("create.main_caption") if image.position == 0 else image.original_name)
            if image.position != 0 and st.button(
                tr("library.make_main"), key=f"main_{image.id}", icon=":material/star:"
            ):
                with session_scope(db) as session:
                    chars.set_main_image(session, character_id, image.id)
                st.rerun()
            if len(images) > 1 and st.button(
                tr("library.remove_image"), key=f"remove_{image.id}", icon=":material/close:"
            ):
                with session_scope(db) as session:
                    chars.remove_image(session, image.id)
                st.rerun()
    uploads = st.file_uploader(
        tr("library.add_images"),
        type=UPLOAD_EXTENSIONS,
        accept_multiple_files=True,
        key=f"add_{character_id}_{st.session_state.get('add_round', 0)}",
    )
    if uploads and st.button(tr("library.add_button"), icon=":material/add_photo_alternate:"):
        try:
            prepared = [prepare_image(f.getvalue(), f.name, image_limits(settings())) for f in uploads]
        except ImageRejected as exc:
            st.error(exc.message(lang()), icon=":material/broken_image:")
        else:
            with session_scope(db) as session:
                chars.add_images(session, character_id, prepared)
            st.session_state.add_round = st.session_state.get("add_round", 0) + 1
            st.rerun()


if (pending := st.session_state.get("confirm_delete")) is not None:
    confirm_delete(**pending)

if (editing := st.session_state.get("editing")) is not None:
    editor(editing)
    st.stop()

query = st.text_input(tr("library.search"), placeholder=tr("library.search_placeholder"), key="library_query")
with Session(db) as session:
    summaries = chars.list_characters(session, query)

if not summaries:
    st.info(tr("library.none_found") if query else tr("library.empty"), icon=":material/search_off:")
    st.page_link("pages/create.py", label=tr("home.new_character"), icon=":material/add_photo_alternate:")

grid = st.columns(3)
for i, summary in enumerate(summaries):
    with grid[i % 3].container(border=True):
        if summary.thumbnail:
            st.image(summary.thumbnail, width="stretch")
        st.markdown(f"**{inert(summary.name) or tr('common.unnamed')}**")
        st.caption(
            tr(
                "library.card_meta",
                language=summary.language,
                count=summary.conversation_count,
                when=local_time(summary.last_activity),
            )
        )
        st.page_link(
            "pages/chat.py", label=tr("library.chat"), icon=":material/forum:", query_params={"character": summary.id}
        )
        actions = st.container(horizontal=True, gap="small")  # buttons keep their labels and wrap if narrow
        if actions.button(tr("library.edit"), key=f"edit_{summary.id}", icon=":material/edit:", type="tertiary"):
            st.session_state.editing = summary.id
            st.rerun()
        if actions.button(
            tr("library.duplicate"), key=f"dup_{summary.id}", icon=":material/content_copy:", type="tertiary"
        ):
            with session_scope(db) as session:
                chars.duplicate_character(session, summary.id, tr("library.copy_suffix"))
            st.rerun()
        if actions.button(tr("common.delete"), key=f"del_{summary.id}", icon=":material/delete:", type="tertiary"):
            st.session_state.confirm_delete = {
                "character_id": summary.id,
                "name": summary.name,
                "conversations": summary.conversation_count,
            }
            st.rerun()
