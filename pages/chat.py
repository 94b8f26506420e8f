"""Chat: talk with a character. History from the database, replies streamed and saved as they come."""

import streamlit as st

from core.base.errors import NotFound, UserError
from core.base.sheets import UPLOAD_EXTENSIONS
from core.services import characters, conversations, turns
from ui import resources
from ui.chat import (
    ReplyPlan,
    bubble,
    ensure_ready,
    model_failure,
    plan_reply,
    sampler_form,
    show_error,
    stream_reply,
    take_plan,
)
from ui.chat_files import export_buttons, import_chat
from ui.language import say, tr, tr_plain
from ui.markdown import inert, inert_line
from ui.widgets import (
    ask_to_confirm,
    backend_status,
    checked_uploads,
    confirmation,
    fresh_area,
    local_time,
    page_setup,
    picture,
    unique_labels,
)
from ui.widgets import avatar as thumbnail_avatar

WINDOW = 40  # messages shown at first, and added by each "Show earlier"

page_setup()
db, actor, backend = resources.db(), resources.actor(), resources.backend()


def query_int(name: str) -> int | None:
    try:
        return int(st.query_params[name])
    except (KeyError, ValueError):
        return None


def show_earlier(conversation_id: int, shown: int) -> None:
    st.session_state[f"window_{conversation_id}"] = shown + WINDOW


def show(character_id: int, conversation_id: int | None = None) -> None:
    """Point the URL (the source of truth for what is shown) at a character and conversation."""
    target = {"character": character_id} | ({"conversation": conversation_id} if conversation_id else {})
    st.query_params.from_dict(target)


# -- which character and conversation (deep links: ?character=…&conversation=…) ---------------------
known = characters.names(db, actor)  # names only: a thousand characters cost no pictures here
if not known:
    st.title(tr("chat.title"))
    st.info(tr("chat.no_characters"), icon=":material/person_off:")
    st.page_link("pages/create.py", label=tr("home.first.button"), icon=":material/add_photo_alternate:")
    st.stop()

# Options are plain text (not Markdown) and each one distinct: a repeated name gets its number, or
# the picker would map it back to the first character of that name.
names = unique_labels({i: name or tr("common.unnamed") for i, name in known.items()})
character_id = query_int("character")
if character_id not in names:
    character_id = next(iter(names))
st.session_state.character_pick = character_id  # the URL is the source of truth
st.sidebar.selectbox(
    tr("chat.character"),
    list(names),
    key="character_pick",
    format_func=names.get,
    on_change=lambda: show(st.session_state.character_pick),
)

try:
    character = characters.get(db, actor, character_id)
    main_sheet = characters.main_sheet(db, actor, character_id)
    chats = conversations.for_character(db, actor, character_id)
except NotFound:  # deleted in another tab since the list was read
    show(next(iter(names)))
    st.rerun()

if not chats:  # "Chat" on a new character: open the first conversation straight away
    show(character_id, conversations.start(db, actor, character_id).id)
    st.rerun()

conversation_id = query_int("conversation")
if conversation_id not in [c.id for c in chats]:
    conversation_id = chats[0].id
show(character_id, conversation_id)
conversation = next(c for c in chats if c.id == conversation_id)
avatar = thumbnail_avatar(main_sheet.row.thumbnail)


def new_conversation() -> None:
    show(character_id, conversations.start(db, actor, character_id).id)


def delete_conversation(conversation_id: int, title: str) -> None:
    conversations.delete(db, actor, conversation_id)
    show(character_id)


confirmation(
    "confirm_conv_delete",
    tr("chat.delete_title"),
    lambda conversation_id, title: tr("chat.delete_body", title=title or tr("chat.untitled")),
    delete_conversation,
)

# -- sidebar: the sheet, the conversations, reply settings ------------------------------------------
with st.sidebar:
    picture(main_sheet.data, main_sheet.row.original_name, caption=inert_line(character.name) or tr("common.unnamed"))
    st.button(tr("chat.new"), icon=":material/add_comment:", on_click=new_conversation, width="stretch")
    st.session_state.conversation_pick = conversation_id
    labels = unique_labels(
        {c.id: inert_line(c.title) or f"{tr('chat.untitled')} · {local_time(c.created_at)}" for c in chats}
    )
    st.radio(
        tr("chat.conversations"),
        list(labels),
        key="conversation_pick",
        format_func=labels.get,
        on_change=lambda: show(character_id, st.session_state.conversation_pick),
    )
    with st.expander(tr("chat.this_conversation")):
        title = st.text_input(tr("chat.rename"), conversation.title, key=f"title_{conversation_id}")
        if st.button(tr("common.save"), key="rename", icon=":material/save:") and title.strip() != conversation.title:
            conversations.rename(db, actor, conversation_id, title)
            st.rerun()
        if st.button(tr("chat.delete"), key="delete_conversation", icon=":material/delete:"):
            ask_to_confirm("confirm_conv_delete", conversation_id=conversation_id, title=conversation.title)
            st.rerun()
        export_buttons(character, conversation)
    with st.expander(tr("chatfile.import"), icon=":material/upload_file:"):
        if (imported := import_chat(character_id)) is not None:
            show(character_id, imported)
            st.rerun()
    sampler_form(conversation, backend)
    status_slot = st.empty()


def show_status() -> None:
    """The model's status, in one place (redrawn once a reply has loaded the model)."""
    with status_slot.container():
        backend_status(backend.status(), compact=True)


show_status()

# -- the conversation -------------------------------------------------------------------------------
plan = take_plan(conversation_id)
# The latest messages only, so a click costs the same in a long conversation; one more is read than
# shown to know whether "Show earlier" has anything to show.
window = st.session_state.get(f"window_{conversation_id}", WINDOW)
story = turns.story(db, actor, conversation_id, last=window + 1)
earlier, story = len(story) > window, story[-window:]
failed = backend.status().state == "failed"
last_reply = max((b.turn for b in story if not b.is_user), default=None)

area = fresh_area("conversation", conversation_id)  # a switch clears the old conversation at once
with area:
    st.title(inert_line(character.name) or tr("common.unnamed"))
    st.caption(inert_line(conversation.title) or tr("chat.untitled"))
    show_error()
    if earlier:
        st.button(tr("chat.show_earlier"), icon=":material/expand_less:", on_click=show_earlier,
                  args=(conversation_id, window))  # fmt: skip
    for b in story:
        if plan is not None and plan.replaces is not None and b.turn >= plan.replaces:
            break  # the reply being written takes its place on screen
        bubble(b, conversation_id, avatar, last_reply=b.turn == last_reply)
    if rejected := st.session_state.pop("rejected_draft", None):
        st.warning(tr("chat.not_sent", text=rejected["text"]) if rejected["text"] else tr("chat.not_sent_empty"))
        for message in rejected["errors"]:
            st.error(message, icon=":material/broken_image:")
    if failed:  # the one place the reason shows, with the one button that tries again
        model_failure(backend.status(), conversation_id, turns.awaiting_reply(story))

prompt = st.chat_input(
    tr_plain("chat.placeholder", name=character.name or tr("common.unnamed")),  # a placeholder is plain text
    accept_file="multiple",
    file_type=UPLOAD_EXTENSIONS,
    key=f"chat_input_{conversation_id}",  # words typed here can only ever go into this conversation
)

with area:
    if plan is not None:
        stream_reply(backend, plan, avatar, show_status)
    elif prompt is not None and (prompt.text.strip() or prompt.files):
        images, errors = checked_uploads(prompt.files, remember=False)
        if errors:  # nothing is stored; the text is shown back so it is not lost
            st.session_state.rejected_draft = {"text": prompt.text, "errors": errors}
            st.rerun()
        try:
            turns.send(db, actor, conversation_id, prompt.text, images)
        except UserError as problem:  # nothing was stored (a full disk, say): the text comes back with why
            st.session_state.rejected_draft = {"text": prompt.text, "errors": [say(problem)]}
            st.rerun()
        with st.chat_message("user"):
            for image in images:
                st.image(image.thumbnail, width=160)
            st.markdown(inert(prompt.text))
        stream_reply(backend, ReplyPlan(conversation_id), avatar, show_status)
    elif not story and not failed:  # no saved greeting: the character greets from its sheet
        stream_reply(backend, ReplyPlan(conversation_id), avatar, show_status)
    elif st.session_state.get("retry_model") and not ensure_ready(backend, show_status):  # "try again", no reply
        st.rerun()  # waiting: just load it; if it fails again, the page says why
    elif turns.awaiting_reply(story) and not failed:
        st.button(
            tr("chat.get_reply"), icon=":material/reply:", on_click=plan_reply, args=(ReplyPlan(conversation_id),)
        )
