"""image bytes apart: full pictures move out of the rows that lists read

`sheetimage` and `attachment` kept each full normalized picture in a `data` column before the
thumbnail, so reading a library card's thumbnail made SQLite walk the picture's overflow pages.
Each picture moves, byte for byte, to `sheetimagebytes` / `attachmentbytes` (one row per image,
deleted with it); then the column goes. Every image is kept.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 18:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PAIRS = (("sheetimage", "sheetimagebytes"), ("attachment", "attachmentbytes"))


def upgrade() -> None:
    for owner, table in PAIRS:
        op.create_table(
            table,
            sa.Column("data", sa.LargeBinary(), nullable=False),
            sa.Column("image_id", sa.Integer(), nullable=False),
            sa.ForeignKeyConstraint(["image_id"], [f"{owner}.id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("image_id"),
        )
        op.execute(f"INSERT INTO {table} (image_id, data) SELECT id, data FROM {owner}")
        with op.batch_alter_table(owner, schema=None) as batch_op:
            batch_op.drop_column("data")


def downgrade() -> None:
    for owner, table in PAIRS:
        with op.batch_alter_table(owner, schema=None) as batch_op:
            batch_op.add_column(sa.Column("data", sa.LargeBinary(), nullable=True))
        op.execute(f"UPDATE {owner} SET data = (SELECT data FROM {table} WHERE {table}.image_id = {owner}.id)")
        with op.batch_alter_table(owner, schema=None) as batch_op:
            batch_op.alter_column("data", existing_type=sa.LargeBinary(), nullable=False)
        op.drop_table(table)
