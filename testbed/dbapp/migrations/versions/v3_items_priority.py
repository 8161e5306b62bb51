"""v3: a priority column and an index built without locking the table; the index names a
column that does not exist ("notes"), so the upgrade fails after its first statement.

CREATE INDEX CONCURRENTLY cannot run in a transaction: `autocommit_block()` commits what the
revision did so far (the new column) first. The failure then leaves the column applied and
alembic_version still at v2: the in-between schema a rollback has to undo, which
`alembic downgrade` alone does not see (the revision was never recorded).

Revision ID: 3c9e5a7b1f23
Revises: 2b8d4f6a0e12
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "3c9e5a7b1f23"
down_revision = "2b8d4f6a0e12"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("items", sa.Column("priority", sa.Integer(), server_default="0", nullable=False))
    with op.get_context().autocommit_block():
        op.create_index("ix_items_notes", "items", ["notes"], postgresql_concurrently=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_items_notes")
    op.drop_column("items", "priority")
