"""Library: every character as a card; search, edit (fields and images), duplicate, delete, chat."""

import streamlit as st

from core.base.errors import NotFound, UserError
from core.base.profile import EDITABLE
from core.base.sheets import UPLOAD_EXTENSIONS
from core.services import characters
from ui import resources
from ui.backup import backup_panel
from ui.draft import apply_draft, draft_controls
from ui.language import say, tr
from ui.markdown import inert_line
from ui.profile_form import profile_inputs
from ui.team import hand_over_panel, ownership, share_switch
from ui.widgets import (
    ask_to_confirm,
    checked_uploads,
    confirmation,
    forget_uploads,
    local_time,
    lore_list,
    page_setup,
    picture,
    square_thumbnail,
    upload_help,
)

COLUMNS = 3
PER_PAGE = 24  # eight rows of three
NOTE_LENGTH = 90  # a line of the notes on each card: enough to tell same-named characters apart

page_setup()
db, actor, backend = resources.db(), resources.actor(), resources.backend()
st.title(tr("library.title"))


def close_editor() -> None:
    """Leave the editor; its inputs are forgotten, so reopening shows the character as stored."""
    if (editing := st.session_state.pop("editing", None)) is not None:
        for name in EDITABLE:
            st.session_state.pop(f"{name}_e{editing}", None)


def delete_character(character_id: int, name: str, conversations: int) -> None:
    characters.delete(db, actor, character_id)
    if st.session_state.get("editing") == character_id:
        close_editor()
    st.toast(tr("library.deleted", name=name), icon=":material/delete:")


def act(action, *args, warm: int | None = None) -> None:
    """Run a change; a refusal (or a character or image gone in another tab) is said, not raised.
    `warm`: the character whose sheets changed, for a loaded model to read again in the background."""
    try:
        action(db, actor, *args)
        if warm is not None:
            characters.warm_up(db, actor, backend, warm)
    except UserError as exc:
        st.session_state.library_error = say(exc)


if error := st.session_state.pop("library_error", None):
    st.error(error, icon=":material/error:")

confirmation(
    "confirm_delete",
    tr("library.delete_title"),
    lambda character_id, name, conversations: tr("library.delete_body", name=name, count=conversations),
    delete_character,
)


def editor(character_id: int) -> None:
    """Edit one character's profile fields and reference images."""
    try:
        character = characters.get(db, actor, character_id)
        images = characters.images(db, actor, character_id)
    except NotFound:
        close_editor()
        st.rerun()
    st.button(tr("library.back"), icon=":material/arrow_back:", on_click=close_editor)
    st.subheader(inert_line(character.name) or tr("common.unnamed"))
    share_switch(character, actor)

    suffix = f"e{character_id}"  # the inputs keep their values under `<field>_e<id>`: a draft can fill them
    apply_draft(suffix)
    draft_controls(backend, suffix, lambda: characters.prompt_images(db, actor, character_id))
    with st.form(f"edit_{character_id}"):
        changes = profile_inputs(EDITABLE, character.model_dump(), key_suffix=suffix)
        if st.form_submit_button(tr("common.save"), type="primary", icon=":material/save:"):
            try:
                characters.update(db, actor, character_id, changes)
                characters.warm_up(db, actor, backend, character_id)
            except UserError as exc:
                st.error(say(exc), icon=":material/error:")
            else:
                st.toast(tr("library.saved"), icon=":material/save:")
                st.rerun()

    png, charx = st.columns(2)
    fits = characters.png_card_fits(db, actor, character_id)  # measured from stored sizes; no picture read
    png.download_button(
        tr("library.export_card"),
        data=lambda: characters.export_card(db, actor, character_id),  # built only when clicked
        file_name=f"{character.name or 'character'}.png",
        mime="image/png",
        icon=":material/download:",
        disabled=not fits,
        help=None if fits else tr("library.png_too_large"),
    )
    charx.download_button(
        tr("library.export_charx"),
        data=lambda: characters.export_charx(db, actor, character_id),  # every reference image, as files
        file_name=f"{character.name or 'character'}.charx",
        mime="application/zip",
        icon=":material/folder_zip:",
    )

    lore_list(characters.lore(character))  # from an imported card: what the character may draw on

    st.subheader(tr("library.images"))
    cols = st.columns(4)
    for i, image in enumerate(images):
        with cols[i % 4].container(border=True):
            caption = tr("create.main_caption") if image.position == 0 else inert_line(image.original_name)
            picture(image.thumbnail, image.original_name, caption=caption)
            if image.position != 0:
                st.button(tr("library.make_main"), key=f"main_{image.id}", icon=":material/star:",
                          on_click=act, args=(characters.set_main_image, character_id, image.id),
                          kwargs={"warm": character_id})  # fmt: skip
            if len(images) > 1:
                st.button(tr("library.remove_image"), key=f"remove_{image.id}", icon=":material/close:",
                          on_click=act, args=(characters.remove_image, character_id, image.id),
                          kwargs={"warm": character_id})  # fmt: skip
    round_ = st.session_state.get("add_round", 0)
    uploads = st.file_uploader(
        tr("library.add_images"),
        type=UPLOAD_EXTENSIONS,
        accept_multiple_files=True,
        help=upload_help("create.extra_help"),
        key=f"add_{character_id}_{round_}",
    )
    prepared, errors = checked_uploads(uploads or [])
    for message in errors:
        st.error(message, icon=":material/broken_image:")
    if prepared and not errors and st.button(tr("library.add_button"), icon=":material/add_photo_alternate:"):
        act(characters.add_images, character_id, prepared, warm=character_id)
        forget_uploads()
        st.session_state.add_round = round_ + 1
        st.rerun()


if (editing := st.session_state.get("editing")) is not None:
    editor(editing)
    st.stop()

hand_over_panel(actor)
backup_panel(actor)
query = st.text_input(
    tr("library.search"),
    placeholder=tr("library.search_placeholder"),
    key="library_query",
    on_change=lambda: st.session_state.pop("library_page", None),  # a new search starts at its first page
)
# One page at a time: a run reads PER_PAGE cards (and their thumbnails), however large the library.
total = characters.count(db, actor, query)
pages = max(1, -(-total // PER_PAGE))
page = min(st.session_state.get("library_page", 0), pages - 1)
summaries = characters.summaries(db, actor, query, limit=PER_PAGE, offset=page * PER_PAGE)

if not summaries:
    st.info(tr("library.none_found") if query else tr("library.empty"), icon=":material/search_off:")
    st.page_link("pages/create.py", label=tr("home.new_character"), icon=":material/add_photo_alternate:")


def note_line(notes: str) -> str:
    first = notes.strip().splitlines()[0] if notes.strip() else ""
    return first if len(first) <= NOTE_LENGTH else first[: NOTE_LENGTH - 1] + "…"


for start in range(0, len(summaries), COLUMNS):  # row by row, so the cards of a row line up
    for column, summary in zip(st.columns(COLUMNS), summaries[start : start + COLUMNS], strict=False):
        with column.container(border=True, height="stretch"):
            if summary.thumbnail:
                picture(square_thumbnail(summary.thumbnail), summary.name, width="stretch")
            mine = summary.owner_id == actor.id
            seen = mine or summary.shared  # an admin lists others' private characters only to delete them
            st.markdown(f"**{inert_line(summary.name) or tr('common.unnamed')}**")
            notes = note_line(summary.notes) if seen else ""
            st.caption(inert_line(notes) or "\u00a0")  # a line even without notes: even heights
            ownership(summary, actor)
            st.caption(
                tr(
                    "library.card_meta",
                    language=summary.language,
                    count=summary.conversation_count,
                    when=local_time(summary.last_activity),
                )
            )
            if seen:
                st.page_link(
                    "pages/chat.py",
                    label=tr("library.chat"),
                    icon=":material/forum:",
                    query_params={"character": summary.id},
                )
            actions = st.container(horizontal=True, gap="small")  # buttons keep their labels and wrap if narrow
            if mine and actions.button(tr("library.edit"), key=f"edit_{summary.id}", icon=":material/edit:",
                                       type="tertiary"):  # fmt: skip
                st.session_state.editing = summary.id
                st.rerun()
            if seen and actions.button(
                tr("library.duplicate"), key=f"dup_{summary.id}", icon=":material/content_copy:", type="tertiary"
            ):
                act(characters.duplicate, summary.id, tr("library.copy_suffix"))
                st.rerun()
            if (mine or actor.is_admin) and actions.button(
                tr("common.delete"), key=f"del_{summary.id}", icon=":material/delete:", type="tertiary"
            ):
                ask_to_confirm(
                    "confirm_delete",
                    character_id=summary.id,
                    name=summary.name,
                    conversations=summary.conversation_count,
                )
                st.rerun()


def turn_page(step: int) -> None:
    st.session_state.library_page = page + step


if pages > 1:
    pager = st.container(horizontal=True, vertical_alignment="center")
    pager.button(tr("library.previous"), icon=":material/chevron_left:", disabled=page == 0, on_click=turn_page,
                 args=(-1,), key="page_back")  # fmt: skip
    pager.caption(tr("library.page", page=page + 1, pages=pages, count=f"{total:,}"))
    pager.button(tr("library.next"), icon=":material/chevron_right:", disabled=page >= pages - 1, on_click=turn_page,
                 args=(1,), key="page_next")  # fmt: skip
