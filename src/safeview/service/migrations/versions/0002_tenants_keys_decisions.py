"""Tenant-scoped deduplication, key expiry and revocation time, decision versions.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("scans") as batch:
        batch.drop_index("ix_scans_sha256")
        batch.create_index("ix_scans_sha256", ["sha256"], unique=False)
        batch.create_unique_constraint("uq_scans_submitted_by_sha256", ["submitted_by", "sha256"])
        batch.add_column(sa.Column("decision_version", sa.Integer, nullable=False, server_default="0"))
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("revoked_at", sa.DateTime, nullable=True))
        batch.add_column(sa.Column("expires_at", sa.DateTime, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("expires_at")
        batch.drop_column("revoked_at")
    with op.batch_alter_table("scans") as batch:
        batch.drop_column("decision_version")
        batch.drop_constraint("uq_scans_submitted_by_sha256", type_="unique")
        batch.drop_index("ix_scans_sha256")
        batch.create_index("ix_scans_sha256", ["sha256"], unique=True)
