"""Home: what the app does, the way in for a first-time user, model status, recent conversations."""

import streamlit as st
from sqlmodel import Session

from core.markdown import inert
from core.resources import engine, model_slot
from core.streamlit_ui import language_switch, local_time, model_status, through_router, tr
from storage import characters as chars
from storage import conversations as convs

through_router()
language_switch()
st.title(tr("home.title"))
st.markdown(tr("home.tagline"))

with Session(engine()) as session:
    characters = chars.list_characters(session)
    recent = convs.list_conversations(session, limit=8)
    names = {c.id: c for c in characters}

if not characters:
    st.subheader(tr("home.first.title"))
    st.markdown(tr("home.first.steps"))
    st.page_link("pages/create.py", label=tr("home.first.button"), icon=":material/add_photo_alternate:")
else:
    left, right = st.columns(2)
    left.page_link("pages/create.py", label=tr("home.new_character"), icon=":material/add_photo_alternate:")
    right.page_link("pages/library.py", label=tr("home.open_library"), icon=":material/photo_library:")

if recent:
    st.subheader(tr("home.recent"))
    for conversation in recent:
        character = names.get(conversation.character_id)
        if character is None:
            continue
        thumb, text, action = st.columns([1, 6, 2], vertical_alignment="center")
        if character.thumbnail:
            thumb.image(character.thumbnail, width=56)
        text.markdown(
            f"**{inert(character.name) or tr('common.unnamed')}** · {inert(conversation.title) or tr('chat.untitled')}"
        )
        text.caption(tr("common.last_activity", when=local_time(conversation.updated_at)))
        action.page_link(
            "pages/chat.py",
            label=tr("home.continue"),
            icon=":material/forum:",
            query_params={"character": character.id, "conversation": conversation.id},
        )

st.subheader(tr("home.model"))
model_status(model_slot())
