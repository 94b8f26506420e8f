"""ids never reused, and signing out everywhere

SQLite hands a deleted row's id to the next row unless the table is AUTOINCREMENT, so an old deep
link (`/chat?character=7`) could open someone else's newer character. Every table with its own id
is rebuilt as AUTOINCREMENT (rows, ids and indexes kept; SQLite starts counting after the highest id
there is). PostgreSQL's sequences never go back, so nothing changes there.

`app_user.latest_iat` and `signed_out_iat`: the newest identity the person has signed in with (its ID
token's `iat`), and that value when they chose Sign out. An identity issued at or before it (a copied
sign-in cookie, another browser) no longer signs them in. Both are the identity provider's clock, so
the app's own clock is never compared with it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("app_user", "character", "sheetimage", "conversation", "attachment", "message")


def _rebuild(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for name in TABLES:
        with op.batch_alter_table(name, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}):
            pass


def upgrade() -> None:
    with op.batch_alter_table("app_user", schema=None) as batch_op:
        batch_op.add_column(sa.Column("latest_iat", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("signed_out_iat", sa.BigInteger(), nullable=True))
    _rebuild(autoincrement=True)


def downgrade() -> None:
    _rebuild(autoincrement=False)
    with op.batch_alter_table("app_user", schema=None) as batch_op:
        batch_op.drop_column("signed_out_iat")
        batch_op.drop_column("latest_iat")
