"""The Library's files: a character's card exports (in its editor), and the backup and restore panel
(download everything as one zip, restore one, see what it did)."""

from __future__ import annotations

from typing import Any

import streamlit as st

from core.base.errors import UserError
from core.services import backup, characters
from core.services.users import Actor
from ui import resources, state
from ui.language import say, tr
from ui.server import logged


def card_exports(actor: Actor, character: Any) -> None:
    """The character as a card PNG (greyed out when its pictures make one too large to write) or a CHARX,
    each built only when clicked."""
    db, character_id, name = resources.db(), character.id, character.name or "character"
    png, charx = st.columns(2)
    fits = characters.png_card_fits(db, actor, character_id)  # measured from stored sizes; no picture read
    png.download_button(
        tr("library.export_card"),
        data=logged(lambda: characters.export_card(db, actor, character_id)),
        file_name=f"{name}.png",
        mime="image/png",
        icon=":material/download:",
        disabled=not fits,
        help=None if fits else tr("library.png_too_large"),
    )
    charx.download_button(
        tr("library.export_charx"),
        data=logged(lambda: characters.export_charx(db, actor, character_id)),  # every reference image, as files
        file_name=f"{name}.charx",
        mime="application/zip",
        icon=":material/folder_zip:",
    )
    for note in characters.export_notes(character):  # files another app's card named but did not hold
        st.caption(say(note))


def backup_panel(actor: Actor) -> None:
    """An expander with the download (built only when clicked), the uploader and the restore report."""
    db = resources.db()
    with st.expander(tr("backup.title"), icon=":material/backup:"):
        st.caption(tr("backup.scope_own"))  # admins too: nobody's backup holds another person's conversations
        st.download_button(
            tr("backup.download"),
            data=logged(lambda: backup.backup(db, actor)),  # built only when clicked
            file_name=backup.file_name(),
            mime="application/zip",
            icon=":material/download:",
            on_click="ignore",
            key=state.key.BACKUP_DOWNLOAD,
        )
        upload = st.file_uploader(
            tr("backup.upload"), type=["zip"], max_upload_size=backup.MAX_UPLOAD_MB, key=state.key.BACKUP_UPLOAD
        )
        if upload is None:
            return
        if not st.button(tr("backup.restore"), icon=":material/restore:", key=state.key.BACKUP_RESTORE):
            return
        with st.spinner(tr("backup.restore")):
            try:
                report = backup.restore(db, actor, upload.getvalue(), upload.name)
            except UserError as exc:
                st.error(say(exc), icon=":material/error:")
                return
        st.success(
            tr(
                "backup.report",
                name=upload.name,
                characters=report.characters_added,
                characters_skipped=report.characters_skipped,
                conversations=report.conversations_added,
                conversations_skipped=report.conversations_skipped,
                messages=report.messages_added,
                images=report.images_added,
            ),
            icon=":material/restore:",
        )
        if report.conversations_unattached:
            st.warning(tr("backup.unattached", count=report.conversations_unattached), icon=":material/link_off:")
