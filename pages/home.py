"""Home: what the app does, the way in for a first-time user, model status, recent conversations."""

import streamlit as st

from core.services import characters, conversations
from ui import resources
from ui.language import tr
from ui.markdown import inert_line
from ui.state import ChatView
from ui.widgets import live_backend_status, local_time, page_setup, picture

page_setup()
db, actor = resources.db(), resources.actor()
st.title(tr("home.title"))
st.markdown(tr("home.tagline"))

recent = conversations.recent(db, actor, limit=8)
if not recent and not characters.count(db, actor):
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
        thumb, text, action = st.columns([1, 6, 2], vertical_alignment="center")
        if conversation.thumbnail:
            picture(conversation.thumbnail, conversation.character_name, into=thumb, width=56)
        name = inert_line(conversation.character_name) or tr("common.unnamed")
        text.markdown(f"**{name}** · {inert_line(conversation.title) or tr('chat.untitled')}")
        text.caption(tr("common.last_activity", when=local_time(conversation.updated_at)))
        action.page_link(
            "pages/chat.py",
            label=tr("home.continue"),
            icon=":material/forum:",
            query_params=ChatView(conversation.character_id, conversation.id).query,
        )

st.subheader(tr("home.model"))
live_backend_status(resources.backend())
