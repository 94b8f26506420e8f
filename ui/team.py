"""What a team sees in the Library: whose a character is, the share switch, and the admin's hand-over.

All of it only with sign-in on; a single-user install shows none of it."""

from __future__ import annotations

from typing import Any

import streamlit as st

from core.base.errors import UserError
from core.services import characters, users
from core.services.users import Actor
from ui import resources, state
from ui.auth import auth_section
from ui.language import say, tr


def teams_on() -> bool:
    return auth_section() is not None


def ownership(summary: Any, actor: Actor) -> None:
    """A line under a library card: shared, shared by someone, or someone's private one (admins)."""
    if not teams_on():
        return
    if summary.owner_id == actor.id:
        line = tr("team.shared_by_you") if summary.shared else tr("team.private")
    elif summary.shared:
        line = tr("team.shared_by", name=summary.owner_name or "?")
    else:
        line = tr("team.private_of", name=summary.owner_name or "?")
    st.caption(line)


def share_switch(character: Any, actor: Actor) -> None:
    """The owner's switch: the team may see the character, chat with it and copy it."""
    if not teams_on() or character.owner_id != actor.id:
        return

    switch = state.share_switch(character.id)

    def flip() -> None:
        try:
            characters.share(resources.db(), actor, character.id, switch.get(False))
        except UserError as exc:
            state.LIBRARY_ERROR.set(say(exc))

    st.toggle(tr("team.share"), value=character.shared, key=switch.key, on_change=flip, help=tr("team.share_help"))


def hand_over_panel(actor: Actor) -> None:
    """Admins: give everything made before sign-in was turned on to one person."""
    if not teams_on() or not actor.is_admin:
        return
    if notice := state.HAND_OVER_NOTICE.pop():  # said on the run after the change
        st.toast(notice, icon=":material/move_item:")
    db = resources.db()
    count, chats = users.local_library(db, actor)
    if not count and not chats:
        return
    with st.expander(tr("team.local_library", count=count, chats=chats), icon=":material/move_item:"):
        people = {p.id: f"{p.name or p.email} ({p.email})" for p in users.people(db, actor)}
        if not people:
            st.caption(tr("team.nobody_yet"))
            return
        chosen = st.selectbox(tr("team.hand_to"), list(people), format_func=people.get, key=state.key.HAND_OVER_TO)
        if st.button(tr("team.hand_over"), icon=":material/move_item:"):
            moved, moved_chats = users.hand_over_local_library(db, actor, chosen)
            notice = tr("team.handed_over", count=moved, chats=moved_chats, name=people[chosen])
            state.HAND_OVER_NOTICE.set(notice)  # a toast raised just before a rerun is never shown
            st.rerun()
