"""impressions.client_hash: the bot rules also group by address and user agent

A salted hash of the connection's address and user agent, stored beside the visitor hash
whatever visitor id the page sent, so that a bot rotating visitor ids is still caught. No
index (adding one would lock a large impressions table; the rules read it within the
created_at window). Impressions logged before this revision keep it null and are judged per
visitor only. Downgrading drops the column.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 18:05:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("impressions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("client_hash", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("impressions", schema=None) as batch_op:
        batch_op.drop_column("client_hash")
