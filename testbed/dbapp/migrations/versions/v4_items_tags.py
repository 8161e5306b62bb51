"""v4 (after v2: v3's revision never succeeds): a tags column on every item. Its author wrote
no downgrade(): Alembic cannot undo it, so a rollback's `alembic downgrade` fails
("... has no attribute 'downgrade'") with nothing changed (the revision is still recorded)
and only a restore of the backup taken before the update puts the database back.

Revision ID: 4d0f6b8c2a34
Revises: 2b8d4f6a0e12
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "4d0f6b8c2a34"
down_revision = "2b8d4f6a0e12"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("items", sa.Column("tags", sa.Text(), nullable=True))
