"""v1: the items table.

Revision ID: 1a7c3e5b9d01
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "1a7c3e5b9d01"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "items",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("items")
