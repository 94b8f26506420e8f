"""Chat: talk with a character. History from the database, replies streamed and saved as they come."""

import streamlit as st

from core.base.errors import NotFound, UserError
from core.base.sheets import UPLOAD_EXTENSIONS
from core.services import characters, conversations, turns
from ui import resources, state
from ui.chat import (
    Next,
    bubble,
    conversation_menu,
    ensure_ready,
    follow,
    message_delete_dialog,
    model_failure,
    next_step,
    plan_reply,
    sampler_form,
    show_error,
    stream_reply,
    take_plan,
)
from ui.chat_files import import_chat
from ui.language import say, tr, tr_plain
from ui.markdown import inert, inert_line
from ui.state import ChatView, ReplyPlan
from ui.widgets import avatar as thumbnail_avatar
from ui.widgets import (
    backend_status,
    checked_uploads,
    confirmation,
    fresh_area,
    local_time,
    page_setup,
    picture,
    unique_labels,
)

WINDOW = 40  # messages shown at first, and added by each "Show earlier"

page_setup()
db, actor, backend = resources.db(), resources.actor(), resources.backend()
view = ChatView.from_query(st.query_params)  # the URL is the source of truth for what is shown


def show(character_id: int, conversation_id: int | None = None) -> None:
    ChatView(character_id, conversation_id).show()


def show_earlier(conversation_id: int, shown: int) -> None:
    state.window(conversation_id).set(shown + WINDOW)


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
character_id = view.character if view.character in names else next(iter(names))
if view.unusable or (view.character is not None and view.character not in names):
    state.LINK_NOT_FOUND.set(tr("chat.link_not_found"))  # said once, above what is shown instead
state.CHARACTER_PICK.set(character_id)  # the picker shows what the URL says
st.sidebar.selectbox(
    tr("chat.character"),
    list(names),
    key=state.CHARACTER_PICK.key,
    format_func=names.get,
    on_change=lambda: show(state.CHARACTER_PICK.get()),
)

try:
    character = characters.get(db, actor, character_id)
    main_sheet = characters.main_sheet(db, actor, character_id)
    chats = conversations.for_character(db, actor, character_id)
except NotFound:  # deleted in another tab since the list was read
    show(next(iter(names)))
    st.rerun()

asked_for = view.conversation if view.character == character_id else None  # a pair, or nothing
if asked_for is not None and asked_for not in [c.id for c in chats]:
    state.LINK_NOT_FOUND.set(tr("chat.link_not_found"))  # never a new conversation for a bad link
    asked_for = None
if not chats and not state.LINK_NOT_FOUND.get():  # "Chat" on a new character: its first conversation at once
    show(character_id, conversations.start(db, actor, character_id).id)
    st.rerun()
if not chats:
    show(character_id)  # the address names what is shown, not the link that was not found
    st.title(inert_line(character.name) or tr("common.unnamed"))
    st.warning(state.LINK_NOT_FOUND.pop(), icon=":material/link_off:")
    if st.button(tr("chat.new"), icon=":material/add_comment:"):
        show(character_id, conversations.start(db, actor, character_id).id)
        st.rerun()
    st.stop()

conversation_id = asked_for or chats[0].id
show(character_id, conversation_id)
conversation = next(c for c in chats if c.id == conversation_id)
avatar = thumbnail_avatar(main_sheet.row.thumbnail)


def new_conversation() -> None:
    show(character_id, conversations.start(db, actor, character_id).id)


def delete_conversation(conversation_id: int, title: str) -> None:
    conversations.delete(db, actor, conversation_id)
    show(character_id)


message_delete_dialog()
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
    state.CONVERSATION_PICK.set(conversation_id)
    labels = unique_labels(
        {c.id: inert_line(c.title) or f"{tr('chat.untitled')} · {local_time(c.created_at)}" for c in chats}
    )
    st.radio(
        tr("chat.conversations"),
        list(labels),
        key=state.CONVERSATION_PICK.key,
        format_func=labels.get,
        on_change=lambda: show(character_id, state.CONVERSATION_PICK.get()),
    )
    conversation_menu(character, conversation)
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


def send(prompt, seen: turns.Seen) -> turns.Sent:
    """Store the message just typed and show it. Nothing is stored when an attachment is refused or the
    disk is full: the text is shown back, with why. A page that was behind is told so: the message
    goes after what another window added, and the page shows it all once the reply is written."""
    images, errors = checked_uploads(prompt.files, remember=False)
    if errors:
        state.REJECTED.set({"text": prompt.text, "errors": errors})
        st.rerun()
    try:
        sent = turns.send(db, actor, conversation_id, prompt.text, images, seen, keep_reply=True)
    except UserError as problem:
        state.REJECTED.set({"text": prompt.text, "errors": [say(problem)]})
        st.rerun()
    with st.chat_message("user"):
        for image in images:
            st.image(image.thumbnail, width=160)
        st.markdown(inert(prompt.text))
    if sent.moved_on:
        st.toast(tr("changed.conversation"), icon=":material/sync:")
    return sent


# -- the conversation -------------------------------------------------------------------------------
plan = take_plan(conversation_id)
# The latest messages only, so a click costs the same in a long conversation; one more is read than
# shown to know whether "Show earlier" has anything to show.
window = state.window(conversation_id).get(WINDOW)
story = turns.story(db, actor, conversation_id, last=window + 1)
earlier, story = len(story) > window, story[-window:]
failed, awaiting = backend.status().state == "failed", turns.awaiting_reply(story)
seen = turns.Seen.of(story)  # what this page shows last: every action on it carries this

rejected = state.REJECTED.pop()
if rejected and rejected["text"]:  # a message that was not sent goes back into the box, to send again
    state.chat_input_text(conversation_id).set(rejected["text"])
prompt = st.chat_input(
    tr_plain("chat.placeholder", name=character.name or tr("common.unnamed")),  # a placeholder is plain text
    accept_file="multiple",
    file_type=UPLOAD_EXTENSIONS,
    key=state.key.chat_input(conversation_id),  # words typed here can only ever go into this conversation
)
typed = prompt is not None and bool(prompt.text.strip() or prompt.files)
step = next_step(planned=plan is not None, typed=typed, empty=not story, failed=failed,
                 retry=state.RETRY_MODEL.get(False), awaiting=awaiting)  # fmt: skip
# The last reply's controls and figures, unless a new reply is about to follow it.
new_reply = step in (Next.SEND, Next.GREET) or (step == Next.WRITE_PLANNED and plan.replaces is None)
last_reply = None if new_reply else max((b.turn for b in story if b.is_reply), default=None)
# An imported group chat goes on with this one character: said when other speakers are on screen.
others = conversations.speakers(db, actor, conversation_id) if any(
    b.is_reply and b.speaker and b.speaker != character.name for b in story) else []  # fmt: skip

with fresh_area("conversation", conversation_id):  # a switch clears the old conversation at once
    st.title(inert_line(character.name) or tr("common.unnamed"))
    st.caption(inert_line(conversation.title) or tr("chat.untitled"))
    if notice := state.LINK_NOT_FOUND.pop():
        st.warning(notice, icon=":material/link_off:")
    show_error()
    if others:
        st.info(
            tr("chat.group", names=", ".join(others), name=character.name or tr("common.unnamed")),
            icon=":material/groups:",
        )
    if earlier:
        st.button(tr("chat.show_earlier"), icon=":material/expand_less:", on_click=show_earlier,
                  args=(conversation_id, window))  # fmt: skip
    for b in story:
        if plan is not None and plan.replaces is not None and b.turn >= plan.replaces:
            break  # the reply being written takes its place on screen
        bubble(b, conversation_id, avatar, name=character.name, last_reply=b.turn == last_reply, seen=seen)
    if rejected:
        st.warning(tr("chat.not_sent_back") if rejected["text"] else tr("chat.not_sent_empty"))
        for message in rejected["errors"]:
            st.error(message, icon=":material/broken_image:")
    if failed:  # the one place the reason shows, with the one button that tries again
        model_failure(backend.status(), conversation_id, awaiting, seen)
    match step:
        case Next.WRITE_PLANNED:
            stream_reply(backend, plan, avatar, show_status)
        case Next.SEND:
            sent = send(prompt, seen)
            stream_reply(backend, ReplyPlan(conversation_id, into=sent.reply_id), avatar, show_status)
        case Next.GREET:  # no saved greeting: the character greets from its sheet
            stream_reply(backend, ReplyPlan(conversation_id, seen=seen), avatar, show_status)
        case Next.LOAD_MODEL:  # "try again" with no reply to write: load it, then the page as it is now
            ensure_ready(backend, show_status)
            st.rerun()
        case Next.OFFER_REPLY:
            st.button(tr("chat.get_reply"), icon=":material/reply:", on_click=plan_reply,
                      args=(ReplyPlan(conversation_id, seen=seen),))  # fmt: skip
    if step in (Next.OFFER_REPLY, Next.NOTHING):
        follow(actor, conversation_id, seen)  # another window's additions show here within seconds
