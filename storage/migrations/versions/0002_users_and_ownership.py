"""users and ownership: every character and conversation belongs to a user; characters can be shared

Every row that existed before is given to the local user (id 1, the one user of an install without
sign-in); an admin can hand them to a person later. Nothing is deleted.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 16:19:49.566172
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LOCAL_USER_ID = 1


def upgrade() -> None:
    users = op.create_table(
        "app_user",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("issuer", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("subject", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("email", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("first_seen", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("last_seen", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("issuer", "subject"),
    )
    with op.batch_alter_table("app_user", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_app_user_email"), ["email"], unique=False)
    now = sa.func.now()
    op.execute(
        users.insert().values(
            id=LOCAL_USER_ID, issuer="local", subject="local", email="", name="", first_seen=now, last_seen=now
        )
    )
    if op.get_bind().dialect.name == "postgresql":  # an id given by hand does not move the sequence
        op.execute("SELECT setval(pg_get_serial_sequence('app_user', 'id'), (SELECT max(id) FROM app_user))")

    # Owners arrive nullable, are filled in, then become required (and a foreign key).
    with op.batch_alter_table("character", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("shared", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("conversation", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner_id", sa.Integer(), nullable=True))
    for name in ("character", "conversation"):
        op.execute(sa.table(name, sa.column("owner_id")).update().values(owner_id=LOCAL_USER_ID))

    with op.batch_alter_table("character", schema=None) as batch_op:
        batch_op.alter_column("owner_id", existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column("shared", existing_type=sa.Boolean(), server_default=None)
        batch_op.drop_index(batch_op.f("ix_character_owner"))
        batch_op.create_index(batch_op.f("ix_character_owner_id"), ["owner_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_character_shared"), ["shared"], unique=False)
        batch_op.create_foreign_key("fk_character_owner_id_app_user", "app_user", ["owner_id"], ["id"])
        batch_op.drop_column("owner")
    with op.batch_alter_table("conversation", schema=None) as batch_op:
        batch_op.alter_column("owner_id", existing_type=sa.Integer(), nullable=False)
        batch_op.create_index(batch_op.f("ix_conversation_owner_id"), ["owner_id"], unique=False)
        batch_op.create_foreign_key("fk_conversation_owner_id_app_user", "app_user", ["owner_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("conversation", schema=None) as batch_op:
        batch_op.drop_constraint("fk_conversation_owner_id_app_user", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_conversation_owner_id"))
        batch_op.drop_column("owner_id")
    with op.batch_alter_table("character", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner", sa.VARCHAR(), nullable=True))
        batch_op.drop_constraint("fk_character_owner_id_app_user", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_character_shared"))
        batch_op.drop_index(batch_op.f("ix_character_owner_id"))
        batch_op.create_index(batch_op.f("ix_character_owner"), ["owner"], unique=False)
        batch_op.drop_column("shared")
        batch_op.drop_column("owner_id")
    with op.batch_alter_table("app_user", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_app_user_email"))
    op.drop_table("app_user")
