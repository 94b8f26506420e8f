"""uids and personas: rows a backup can recognise, and who the user is to the characters

`character` and `conversation` get a `uid` (32 hex digits, unique, kept by backups and restores) so
restoring a backup into a library that already holds some of it adds only what is missing. Every
existing row gets its own. `app_user` gets a persona: the name the characters call the user by
({{user}}) and a short description told to them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 18:20:00
"""

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("character", "conversation")


def upgrade() -> None:
    with op.batch_alter_table("app_user", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("persona_name", sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("persona_description", sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default="")
        )
    bind = op.get_bind()
    for name in TABLES:
        with op.batch_alter_table(name, schema=None) as batch_op:
            batch_op.add_column(sa.Column("uid", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True))
        table = sa.table(name, sa.column("id"), sa.column("uid"))
        for (row_id,) in bind.execute(sa.select(table.c.id)).all():
            bind.execute(table.update().where(table.c.id == row_id).values(uid=uuid.uuid4().hex))
        with op.batch_alter_table(name, schema=None) as batch_op:
            batch_op.alter_column("uid", existing_type=sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False)
            batch_op.create_index(batch_op.f(f"ix_{name}_uid"), ["uid"], unique=True)


def downgrade() -> None:
    for name in TABLES:
        with op.batch_alter_table(name, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f"ix_{name}_uid"))
            batch_op.drop_column("uid")
    with op.batch_alter_table("app_user", schema=None) as batch_op:
        batch_op.drop_column("persona_description")
        batch_op.drop_column("persona_name")
