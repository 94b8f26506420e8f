"""Chat: talk with a character. History from the database, replies streamed and saved as they come."""

import streamlit as st
from sqlmodel import Session

from core import chat
from core.markdown import inert, inert_stream
from core.model import ModelLoadError
from core.resources import engine, model_slot, settings
from core.sampling import InvalidSampler, SamplerSettings
from core.sheets import UPLOAD_EXTENSIONS, ImageRejected, prepare_image
from core.streamlit_ui import image_limits, lang, language_switch, local_time, model_status, through_router, tr
from storage import characters as chars
from storage import conversations as convs
from storage.db import session_scope
from storage.tables import MessageStatus, Role

through_router()
language_switch()
db = engine()
slot = model_slot()


def query_int(name: str) -> int | None:
    try:
        return int(st.query_params[name])
    except (KeyError, ValueError):
        return None


# -- which character and conversation (deep links: ?character=…&conversation=…) ---------------------
with Session(db) as session:
    characters = chars.list_characters(session)
if not characters:
    st.title(tr("chat.title"))
    st.info(tr("chat.no_characters"), icon=":material/person_off:")
    st.page_link("pages/create.py", label=tr("home.first.button"), icon=":material/add_photo_alternate:")
    st.stop()

by_id = {c.id: c for c in characters}
character_id = query_int("character")
if character_id not in by_id:
    character_id = characters[0].id
st.session_state.character_pick = character_id  # the URL is the source of truth
st.sidebar.selectbox(
    tr("chat.character"),
    list(by_id),
    key="character_pick",
    format_func=lambda i: by_id[i].name or tr("common.unnamed"),  # options are plain text, not Markdown
    on_change=lambda: st.query_params.from_dict({"character": st.session_state.character_pick}),
)

with Session(db) as session:
    character = chars.get_character(session, character_id)
    conversations = convs.list_conversations(session, character_id)
    main_sheet = chars.get_main_image(session, character_id)

if not conversations:  # "Chat" on a new character: open the first conversation straight away
    with session_scope(db) as session:
        conversation, _ = chat.open_conversation(session, character)
    st.query_params.from_dict({"character": character_id, "conversation": conversation.id})
    st.rerun()

conv_ids = [c.id for c in conversations]
conversation_id = query_int("conversation")
if conversation_id not in conv_ids:
    conversation_id = conv_ids[0]
st.query_params.from_dict({"character": character_id, "conversation": conversation_id})
conversation = next(c for c in conversations if c.id == conversation_id)


# -- callbacks: they run before the script, so the page renders the new state once ------------------
def act(**action) -> None:
    st.session_state.chat_action = action


def new_conversation() -> None:
    with session_scope(db) as session:
        created, _ = chat.open_conversation(session, chars.get_character(session, character_id))
    st.query_params.from_dict({"character": character_id, "conversation": created.id})


def choose(turn: int, variant: int) -> None:
    with session_scope(db) as session:
        convs.choose_variant(session, conversation_id, turn, variant)


def delete_turn(turn: int) -> None:
    with session_scope(db) as session:
        convs.delete_turn(session, conversation_id, turn)


def forget_delete() -> None:
    st.session_state.pop("confirm_delete_conversation", None)


@st.dialog(tr("chat.delete_title"), on_dismiss=forget_delete)
def confirm_delete_conversation() -> None:
    st.write(tr("chat.delete_body", title=inert(conversation.title) or tr("chat.untitled")))
    yes, no = st.columns(2)
    if yes.button(tr("common.delete"), type="primary", icon=":material/delete:", key="confirm_conv_delete"):
        with session_scope(db) as session:
            convs.delete_conversation(session, conversation_id)
        forget_delete()
        st.query_params.from_dict({"character": character_id})
        st.rerun()
    if no.button(tr("common.cancel"), key="cancel_conv_delete"):
        forget_delete()
        st.rerun()


# -- sidebar: the sheet, the conversations, reply settings ------------------------------------------
with st.sidebar:
    st.image(main_sheet.data, caption=inert(character.name) or tr("common.unnamed"))
    st.button(tr("chat.new"), icon=":material/add_comment:", on_click=new_conversation, width="stretch")
    st.session_state.conversation_pick = conversation_id
    labels = {c.id: inert(c.title) or f"{tr('chat.untitled')} · {local_time(c.created_at)}" for c in conversations}
    repeated = {label for label in labels.values() if list(labels.values()).count(label) > 1}
    labels = {i: f"{label} (#{i})" if label in repeated else label for i, label in labels.items()}
    st.radio(
        tr("chat.conversations"),
        conv_ids,
        key="conversation_pick",
        format_func=labels.get,
        on_change=lambda: st.query_params.from_dict(
            {"character": character_id, "conversation": st.session_state.conversation_pick}
        ),
    )
    with st.expander(tr("chat.this_conversation")):
        title = st.text_input(tr("chat.rename"), conversation.title, key=f"title_{conversation_id}")
        if st.button(tr("common.save"), key="rename", icon=":material/save:") and title.strip() != conversation.title:
            with session_scope(db) as session:
                convs.rename_conversation(session, conversation_id, title)
            st.rerun()
        if st.button(tr("chat.delete"), key="delete_conversation", icon=":material/delete:"):
            st.session_state.confirm_delete_conversation = True
    with st.expander(tr("chat.settings")), st.form(f"sampler_{conversation_id}"):
        current = chat.sampler_of(conversation)
        temperature = st.slider(
            tr("sampler.label.temperature"),
            0.0,
            2.0,
            float(current.temperature),
            0.05,
            help=tr("sampler.help.temperature"),
        )
        top_p = st.slider(tr("sampler.label.top_p"), 0.05, 1.0, float(current.top_p), 0.05)
        top_k = st.number_input(tr("sampler.label.top_k"), 0, 1000, int(current.top_k))
        max_new = st.number_input(tr("sampler.label.max_new_tokens"), 1, 4096, int(current.max_new_tokens))
        penalty = st.slider(tr("sampler.label.repetition_penalty"), 1.0, 2.0, float(current.repetition_penalty), 0.05)
        fixed = st.checkbox(tr("sampler.label.fixed_seed"), current.seed is not None)
        seed = st.number_input(tr("sampler.label.seed"), 0, 2**31 - 1, int(current.seed or 0))
        if st.form_submit_button(tr("common.save"), icon=":material/tune:"):
            try:
                sampler = SamplerSettings(
                    temperature, top_p, int(top_k), int(max_new), penalty, int(seed) if fixed else None
                )
            except InvalidSampler as exc:
                for message in exc.messages(lang()):
                    st.error(message)
            else:
                with session_scope(db) as session:
                    convs.save_settings(session, conversation_id, sampler.to_dict())
                st.toast(tr("chat.settings_saved"), icon=":material/tune:")
    model_status(slot, compact=True)

if st.session_state.get("confirm_delete_conversation"):
    confirm_delete_conversation()


# -- generating a reply -----------------------------------------------------------------------------
def retry_button() -> None:
    st.button(
        tr("chat.retry_model"),
        icon=":material/refresh:",
        on_click=st.session_state.update,
        kwargs={"retry_model": True, "chat_action": {"kind": "reply"}},
    )


def stream_reply(regenerate_turn: int | None = None) -> None:
    """Load the model if needed, then stream a reply into a row saved as it grows."""
    if slot.status().state == "failed" and not st.session_state.pop("retry_model", False):
        retry_button()  # the error itself is shown with the model status above
        return
    if slot.status().state != "ready":
        with st.status(tr("chat.loading_model"), expanded=True) as box:
            try:
                chat_engine = slot.engine(progress=box.write)
            except ModelLoadError as exc:
                box.update(label=tr("chat.model_failed"), state="error")
                st.error(exc.message(lang()), icon=":material/error:")
                retry_button()
                return
            box.update(label=tr("chat.model_ready"), state="complete", expanded=False)
    else:
        chat_engine = slot.engine()
    with Session(db) as session:
        request = chat.build_request(session, conversation_id, before_turn=regenerate_turn)
    message_id, _ = chat.start_reply(db, conversation_id, regenerate_turn)
    with st.chat_message("assistant", avatar=main_sheet.thumbnail):
        st.button(tr("chat.stop"), icon=":material/stop_circle:", key="stop")  # any click reruns: that stops it
        note = st.empty()
        chunks = chat.stream_into(
            db,
            message_id,
            chat_engine.stream(
                request, on_wait=lambda n: note.info(tr("chat.queued", ahead=n), icon=":material/hourglass_top:")
            ),
            lang(),
        )
        try:
            st.write_stream(inert_stream(chunks))
        except Exception:  # noqa: BLE001 - already saved on the message row; shown after the rerun
            pass
        finally:
            chunks.close()
    st.rerun()


# -- the conversation -------------------------------------------------------------------------------
st.title(inert(character.name) or tr("common.unnamed"))
st.caption(inert(conversation.title) or tr("chat.untitled"))
if slot.status().state != "ready":
    model_status(slot)

action = st.session_state.pop("chat_action", None)
if action and action["kind"] == "edit":
    with session_scope(db) as session:
        message = convs.variants(session, conversation_id, action["turn"])
        convs.update_message(session, next(m.id for m in message if m.chosen), text=action["text"])
        convs.delete_after(session, conversation_id, action["turn"])

with Session(db) as session:
    messages = convs.list_messages(session, conversation_id)
    counts = convs.variant_counts(session, conversation_id)
    attachments = {m.id: convs.get_attachments(session, m.attachment_ids) for m in messages if m.attachment_ids}

regenerate_turn = action["turn"] if action and action["kind"] == "regenerate" else None
last_assistant = max((m.turn for m in messages if m.role == Role.ASSISTANT), default=None)
editing = st.session_state.get("editing_turn")

for m in messages:
    if regenerate_turn is not None and m.turn >= regenerate_turn:
        break
    is_user = m.role == Role.USER
    with st.chat_message("user" if is_user else "assistant", avatar=None if is_user else main_sheet.thumbnail):
        for a in attachments.get(m.id, []):
            st.image(a.thumbnail, width=160)
        if is_user and editing == m.turn:
            with st.form(f"edit_{m.turn}"):
                new_text = st.text_area(tr("chat.edit_label"), m.text)
                save, cancel = st.columns(2)
                if save.form_submit_button(tr("chat.resend"), type="primary", icon=":material/send:"):
                    st.session_state.pop("editing_turn", None)
                    act(kind="edit", turn=m.turn, text=new_text)
                    st.rerun()
                if cancel.form_submit_button(tr("common.cancel")):
                    st.session_state.pop("editing_turn", None)
                    st.rerun()
            continue
        st.markdown(inert(m.text))
        if m.status == MessageStatus.PARTIAL:
            st.caption(tr("chat.partial"))
        if m.error:
            st.error(tr("chat.failed", reason=m.error), icon=":material/error:")
        with st.container(horizontal=True, gap="small"):
            n = counts.get(m.turn, 1)
            if not is_user and n > 1:
                st.button(
                    "‹",
                    key=f"prev_{m.turn}",
                    disabled=m.variant == 0,
                    on_click=choose,
                    type="tertiary",
                    args=(m.turn, m.variant - 1),
                    help=tr("chat.previous"),
                )
                st.markdown(f"{m.variant + 1}/{n}", width="content")
                st.button(
                    "›",
                    key=f"next_{m.turn}",
                    disabled=m.variant >= n - 1,
                    on_click=choose,
                    type="tertiary",
                    args=(m.turn, m.variant + 1),
                    help=tr("chat.next"),
                )
            if not is_user and m.turn == last_assistant:
                st.button(
                    tr("chat.regenerate"),
                    key=f"regen_{m.turn}",
                    icon=":material/refresh:",
                    type="tertiary",
                    on_click=act,
                    kwargs={"kind": "regenerate", "turn": m.turn},
                )
            if is_user:
                st.button(
                    tr("chat.edit"),
                    key=f"edit_{m.turn}",
                    icon=":material/edit:",
                    type="tertiary",
                    on_click=lambda turn=m.turn: st.session_state.update(editing_turn=turn),
                )
            st.button(
                tr("chat.delete_message"),
                key=f"del_{m.turn}",
                icon=":material/delete:",
                type="tertiary",
                on_click=delete_turn,
                args=(m.turn,),
            )
        if not is_user and m.turn == last_assistant and m.stats.get("new_tokens"):
            s = m.stats
            st.caption(
                tr(
                    "chat.stats",
                    ttft=f"{s['ttft_s']:.2f}",
                    tps=f"{s['tokens_per_s']:.1f}",
                    prompt=s["prompt_tokens"],
                    cached=s["prompt_tokens"] - s["prefilled_tokens"],
                )
            )
            if s.get("dropped_turns"):
                st.caption(tr("chat.trimmed", count=s["dropped_turns"]))

if rejected := st.session_state.pop("rejected_draft", None):
    st.warning(tr("chat.not_sent", text=rejected["text"]) if rejected["text"] else tr("chat.not_sent_empty"))
    for message in rejected["errors"]:
        st.error(message, icon=":material/broken_image:")

prompt = st.chat_input(
    tr("chat.placeholder", name=character.name or tr("common.unnamed")),
    accept_file="multiple",
    file_type=UPLOAD_EXTENSIONS,
)

if regenerate_turn is not None:
    stream_reply(regenerate_turn)
elif action and action["kind"] == "edit":
    stream_reply()
elif prompt is not None and (prompt.text.strip() or prompt.files):
    images, errors = [], []
    for f in prompt.files:
        try:
            images.append(prepare_image(f.getvalue(), f.name, image_limits(settings())))
        except ImageRejected as exc:
            errors.append(exc.message(lang()))
    if errors:  # nothing is stored; the text is shown back so it is not lost
        st.session_state.rejected_draft = {"text": prompt.text, "errors": errors}
        st.rerun()
    with session_scope(db) as session:
        chat.add_user_message(session, conversation_id, prompt.text, images)
    with st.chat_message("user"):
        for image in images:
            st.image(image.thumbnail, width=160)
        st.markdown(inert(prompt.text))
    stream_reply()
elif not messages:
    stream_reply()  # a new conversation without a saved greeting: the character greets from its sheet
elif messages[-1].role == Role.USER:
    st.button(tr("chat.get_reply"), icon=":material/reply:", on_click=act, kwargs={"kind": "reply"})
    if action and action["kind"] == "reply":
        stream_reply()
