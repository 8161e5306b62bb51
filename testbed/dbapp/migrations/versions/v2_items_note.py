"""v2: a note on every item, filled for the rows that exist.

Revision ID: 2b8d4f6a0e12
Revises: 1a7c3e5b9d01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "2b8d4f6a0e12"
down_revision = "1a7c3e5b9d01"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("items", sa.Column("note", sa.Text(), nullable=True))
    op.execute("UPDATE items SET note = 'note of ' || name")


def downgrade() -> None:
    op.drop_column("items", "note")
