"""Library: every character as a card; search, edit (fields and images), duplicate, delete, chat.

The editor is part of the URL, `/library?edit=<id>`, so a link or a reload opens it again."""

import streamlit as st

from core.base.errors import Refused, UserError
from core.base.profile import EDITABLE
from core.base.sheets import UPLOAD_EXTENSIONS
from core.services import characters
from ui import resources, state
from ui.backup import backup_panel, card_exports
from ui.character_form import Submit, character_form
from ui.language import say, tr
from ui.markdown import inert_line
from ui.state import ChatView, LibraryView
from ui.team import hand_over_panel, ownership, share_switch
from ui.widgets import (
    ask_to_confirm,
    checked_uploads,
    confirmation,
    forget_uploads,
    local_time,
    other_pictures_panel,
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
view = LibraryView.from_query(st.query_params)
st.title(tr("library.title"))


def forget_editor() -> None:
    """The editor's inputs are forgotten once it is left, so reopening shows the character as stored."""
    if (shown := state.EDITOR_SHOWN.pop()) is not None:
        state.forget_fields(EDITABLE, state.editor_inputs(shown))


def close_editor() -> None:
    """Back: the library's cards again."""
    forget_editor()
    LibraryView().show()


def delete_character(character_id: int, name: str, conversations: int) -> None:
    characters.delete(db, actor, character_id)
    if view.edit == character_id:
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
        state.LIBRARY_ERROR.set(say(exc))


if error := state.LIBRARY_ERROR.pop():
    st.error(error, icon=":material/error:")

confirmation(
    "confirm_delete",
    tr("library.delete_title"),
    lambda character_id, name, conversations: tr("library.delete_body", name=name, count=conversations),
    delete_character,
)


def editable(character_id: int):
    """The character to edit, with its images. Someone else's private one, or one that is not there,
    is `NotFound` (the services say so); one shared by someone else is theirs to change."""
    character = characters.get(db, actor, character_id)
    if character.owner_id != actor.id:
        raise Refused("not_yours", name=character.name)
    return character, characters.images(db, actor, character_id)


def editor(character, images) -> None:
    """Edit one character's profile fields and reference images."""
    character_id = character.id
    state.EDITOR_SHOWN.set(character_id)
    st.button(tr("library.back"), icon=":material/arrow_back:", on_click=close_editor)
    st.subheader(inert_line(character.name) or tr("common.unnamed"))
    share_switch(character, actor)

    def save(changes: dict) -> None:
        try:
            characters.update(db, actor, character_id, changes)
            characters.warm_up(db, actor, backend, character_id)
        except UserError as exc:
            st.error(say(exc), icon=":material/error:")
        else:
            st.toast(tr("library.saved"), icon=":material/save:")
            st.rerun()

    character_form(
        backend,
        state.editor_inputs(character_id),
        lambda: characters.prompt_images(db, actor, character_id),  # read only when a draft starts
        fields=EDITABLE,
        values=character.model_dump(),
        book=characters.lore(character),
        submit=Submit(tr("common.save"), ":material/save:", save),
        one_form=state.key.editor_form(character_id),
    )

    card_exports(actor, character)

    st.subheader(tr("library.images"))
    cols = st.columns(4)
    for i, image in enumerate(images):
        with cols[i % 4].container(border=True):
            caption = tr("create.main_caption") if image.position == 0 else inert_line(image.original_name)
            picture(image.thumbnail, image.original_name, caption=caption)
            if image.position != 0:
                st.button(tr("library.make_main"), key=state.key.make_main(image.id), icon=":material/star:",
                          on_click=act, args=(characters.set_main_image, character_id, image.id),
                          kwargs={"warm": character_id})  # fmt: skip
            if len(images) > 1:
                st.button(tr("library.remove_image"), key=state.key.remove_image(image.id), icon=":material/close:",
                          on_click=act, args=(characters.remove_image, character_id, image.id),
                          kwargs={"warm": character_id})  # fmt: skip
    round_ = state.ADD_ROUND.get(0)
    uploads = st.file_uploader(
        tr("library.add_images"),
        type=UPLOAD_EXTENSIONS,
        accept_multiple_files=True,
        help=upload_help("create.extra_help"),
        key=state.key.add_images(character_id, round_),
    )
    prepared, errors = checked_uploads(uploads or [])
    for message in errors:
        st.error(message, icon=":material/broken_image:")
    if prepared and not errors and st.button(tr("library.add_button"), icon=":material/add_photo_alternate:"):
        act(characters.add_images, character_id, prepared, warm=character_id)
        forget_uploads()
        state.ADD_ROUND.set(round_ + 1)
        st.rerun()
    other_pictures_panel(("character", character_id, character.updated_at), character.extensions or {})


if state.EDITOR_SHOWN.get() not in (None, view.edit):  # left by a link, the menu or the browser's Back
    forget_editor()
if view.edit is not None:
    try:
        opened = editable(view.edit)
    except UserError as problem:  # not there, or not theirs: the library, saying so
        st.warning(say(problem), icon=":material/search_off:")
        LibraryView().show()
    else:
        editor(*opened)
        st.stop()

hand_over_panel(actor)
backup_panel(actor)
query = st.text_input(
    tr("library.search"),
    placeholder=tr("library.search_placeholder"),
    key=state.key.LIBRARY_QUERY,
    on_change=state.LIBRARY_PAGE.pop,  # a new search starts at its first page
)
# One page at a time: a run reads PER_PAGE cards (and their thumbnails), however large the library.
total = characters.count(db, actor, query)
pages = max(1, -(-total // PER_PAGE))
page = min(state.LIBRARY_PAGE.get(0), pages - 1)
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
                    query_params=ChatView(character=summary.id).query,
                )
            actions = st.container(horizontal=True, gap="small")  # buttons keep their labels and wrap if narrow
            key, asked = state.key, {"character_id": summary.id, "name": summary.name,
                                     "conversations": summary.conversation_count}  # fmt: skip
            if mine:
                actions.button(tr("library.edit"), key=key.edit_character(summary.id), icon=":material/edit:",
                               type="tertiary", on_click=LibraryView(edit=summary.id).show)  # fmt: skip
            if seen:
                actions.button(tr("library.duplicate"), key=key.duplicate(summary.id), icon=":material/content_copy:",
                               type="tertiary", on_click=act,
                               args=(characters.duplicate, summary.id, tr("library.copy_suffix")))  # fmt: skip
            if mine or actor.is_admin:
                actions.button(tr("common.delete"), key=key.delete_character(summary.id), icon=":material/delete:",
                               type="tertiary", on_click=ask_to_confirm, args=("confirm_delete",),
                               kwargs=asked)  # fmt: skip


def turn_page(step: int) -> None:
    state.LIBRARY_PAGE.set(page + step)


if pages > 1:
    pager = st.container(horizontal=True, vertical_alignment="center")
    pager.button(tr("library.previous"), icon=":material/chevron_left:", disabled=page == 0, on_click=turn_page,
                 args=(-1,), key=state.key.PAGE_BACK)  # fmt: skip
    pager.caption(tr("library.page", page=page + 1, pages=pages, count=f"{total:,}"))
    pager.button(tr("library.next"), icon=":material/chevron_right:", disabled=page >= pages - 1, on_click=turn_page,
                 args=(1,), key=state.key.PAGE_NEXT)  # fmt: skip
