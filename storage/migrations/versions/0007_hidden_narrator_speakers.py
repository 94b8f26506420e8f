"""hidden messages, narrator lines, speakers and what an imported chat carries

`message.hidden`: a message kept and shown but left out of what the model reads (SillyTavern's
`is_system: true` on an ordinary line). `message.role` may now also be "narrator" (plain text: no
change to the column). `message.speaker`: who said it, as an imported (group) chat names them.
`message.carried`: what a chat file said of the alternative that the app does not use itself
(SillyTavern's `extra`, its `send_date` as written, generation times, other keys), written back on
export. `conversation.chat_metadata`: an imported chat's own settings (the author's note…).

Every existing row is kept as it is: messages are visible, have no speaker and carry nothing;
conversations have no chat settings.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EMPTY = sa.text("'{}'")  # JSON `{}`, as both SQLite and PostgreSQL take it for a default
# Plain ALTER TABLE … ADD COLUMN on both databases: a batch "move and copy" on SQLite would rebuild the
# tables without AUTOINCREMENT (migration 0005), and ids could be given again.
KEEP = {"sqlite_autoincrement": True}


def upgrade() -> None:
    op.add_column("message", sa.Column("hidden", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column(
        "message", sa.Column("speaker", sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default="")
    )
    op.add_column("message", sa.Column("carried", sa.JSON(), nullable=False, server_default=EMPTY))
    op.add_column("conversation", sa.Column("chat_metadata", sa.JSON(), nullable=False, server_default=EMPTY))


def downgrade() -> None:
    with op.batch_alter_table("conversation", table_kwargs=KEEP) as batch_op:
        batch_op.drop_column("chat_metadata")
    with op.batch_alter_table("message", table_kwargs=KEEP) as batch_op:
        batch_op.drop_column("carried")
        batch_op.drop_column("speaker")
        batch_op.drop_column("hidden")
