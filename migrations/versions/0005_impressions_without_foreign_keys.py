"""impressions: no foreign keys to images and generator_versions

Each foreign-key check locked the referenced row FOR KEY SHARE: every impression locked one
of a batch's few dozen image rows and its version's row, so the writers of all API
processes kept locking the same rows (PostgreSQL made a multixact for every row two of them
held at once: 2,749 in a 10 s benchmark run, docs/BENCHMARKS.md), on top of each check's
own lookup. The reference is kept by the writes instead: the group commit inserts a group
only if every row's image belongs to its version
(app/queries_pg.py, app/queries.py), which the two keys never checked, and nothing deletes
images or versions (retention deletes a version's impressions and interactions). Downgrading
puts the keys back.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 15:20:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEYS = (
    ("fk_impressions_image_id_images", "images", "image_id"),
    ("fk_impressions_version_id_generator_versions", "generator_versions", "version_id"),
)


def upgrade() -> None:
    with op.batch_alter_table("impressions", schema=None) as batch_op:
        for name, _, _ in KEYS:
            batch_op.drop_constraint(name, type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("impressions", schema=None) as batch_op:
        for name, table, column in KEYS:
            batch_op.create_foreign_key(name, table, [column], ["id"])
