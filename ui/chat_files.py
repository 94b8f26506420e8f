"""The chat page's file widgets: download the open conversation (Markdown, SillyTavern JSONL) and import
a SillyTavern chat as a new conversation.

The downloads are built when clicked (Streamlit runs the callable then), so drawing the page costs
the same however long the conversation is.
"""

from __future__ import annotations

from datetime import UTC

import streamlit as st

from core.base.errors import UserError
from core.formats.chat_files import file_name
from core.services import conversations
from storage.tables import Character, Conversation
from ui import resources, state
from ui.language import lang, say, tr
from ui.server import logged
from ui.widgets import browser_zone


def export_buttons(character: Character, conversation: Conversation) -> None:
    """Two downloads of the conversation: Markdown to read, JSONL for SillyTavern."""
    db, actor, cid, viewer = resources.db(), resources.actor(), conversation.id, lang()
    title = conversation.title or tr("chat.untitled")
    st.download_button(
        tr("chatfile.export_md"),
        data=logged(lambda: conversations.export_markdown(db, actor, cid, viewer)),
        file_name=file_name(character.name, title, "md"),
        mime="text/markdown",
        on_click="ignore",
        icon=":material/description:",
        key=state.key.export_markdown(cid),
    )
    st.download_button(
        tr("chatfile.export_jsonl"),
        data=logged(lambda: conversations.export_jsonl(db, actor, cid)),
        file_name=file_name(character.name, title, "jsonl"),
        mime="application/jsonl",
        on_click="ignore",
        icon=":material/download:",
        key=state.key.export_jsonl(cid),
    )


def import_chat(character_id: int) -> int | None:
    """A file uploader for a SillyTavern chat (under a heading that says so); the new conversation's id
    once one is imported.

    The uploader gets a fresh key after an import, so the same file is not imported again on the
    next run; what was imported is said on that run."""
    if notice := state.CHAT_IMPORT_NOTICE.pop():
        st.toast(notice, icon=":material/upload_file:")
    round_ = state.CHAT_IMPORT_ROUND.setdefault(0)
    upload = st.file_uploader(tr("chatfile.import"), type=["jsonl"], help=tr("chatfile.import_help"),
                              key=state.key.chat_import(character_id, round_),
                              label_visibility="collapsed")  # fmt: skip
    if upload is None:
        return None
    refused: dict[str, UserError] = state.CHAT_IMPORT_REFUSED.setdefault({})
    try:
        if upload.file_id in refused:  # read once: a refused file is not parsed again on every rerun
            raise refused[upload.file_id]
        imported = conversations.import_jsonl(
            resources.db(), resources.actor(), character_id, upload.getvalue(), upload.name, browser_zone() or UTC
        )  # a time the file wrote without a zone is the viewer's local time, as SillyTavern shows it
    except UserError as problem:  # nothing was stored
        refused[upload.file_id] = problem
        st.error(say(problem), icon=":material/error:")
        return None
    notice = tr("chatfile.imported", title=imported.conversation.title, count=imported.messages)
    if imported.hidden:
        notice += " " + tr("chatfile.kept_hidden", count=imported.hidden)
    if imported.narrator:
        notice += " " + tr("chatfile.narrator", count=imported.narrator)
    if imported.speakers:
        notice += " " + tr("chatfile.group", names=", ".join(imported.speakers))
    if imported.skipped_system:
        notice += " " + tr("chatfile.skipped_system", count=imported.skipped_system)
    if imported.names_cut:
        notice += " " + tr("chatfile.names_cut", count=imported.names_cut, limit=conversations.MAX_SPEAKER)
    state.CHAT_IMPORT_NOTICE.set(notice)
    state.CHAT_IMPORT_ROUND.set(round_ + 1)
    return imported.conversation.id
