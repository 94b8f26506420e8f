"""The Library's backup and restore panel: download everything as one zip, restore one, see what it did."""

from __future__ import annotations

import streamlit as st

from core.base.errors import UserError
from core.services import backup
from core.services.users import Actor
from ui import resources
from ui.language import say, tr


def backup_panel(actor: Actor) -> None:
    """An expander with the download (built only when clicked), the uploader and the restore report."""
    db = resources.db()
    with st.expander(tr("backup.title"), icon=":material/backup:"):
        st.caption(tr("backup.scope_own"))  # admins too: nobody's backup holds another person's conversations
        st.download_button(
            tr("backup.download"),
            data=lambda: backup.backup(db, actor),  # built only when clicked
            file_name=backup.file_name(),
            mime="application/zip",
            icon=":material/download:",
            on_click="ignore",
            key="backup_download",
        )
        upload = st.file_uploader(
            tr("backup.upload"), type=["zip"], max_upload_size=backup.MAX_UPLOAD_MB, key="backup_upload"
        )
        if upload is None or not st.button(tr("backup.restore"), icon=":material/restore:", key="backup_restore"):
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
