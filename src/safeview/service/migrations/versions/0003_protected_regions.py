"""Protected regions (issue 16): the submitter's regions and face setting per scan, deduplication
that includes them, reviewer-added regions, result versions and the superseded results.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("scans") as batch:
        batch.add_column(sa.Column("protect_json", sa.Text, nullable=True))
        batch.add_column(sa.Column("protect_faces", sa.Boolean, nullable=True))
        batch.add_column(sa.Column("protect_key", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("reviewer_protect_json", sa.Text, nullable=True))
        batch.add_column(sa.Column("result_version", sa.Integer, nullable=False, server_default="1"))
        batch.drop_constraint("uq_scans_submitted_by_sha256", type_="unique")
        batch.create_unique_constraint("uq_scans_submitted_by_sha256_protect", ["submitted_by", "sha256", "protect_key"])
    op.create_table(
        "scan_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("scan_id", sa.String(32), sa.ForeignKey("scans.id", ondelete="CASCADE"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("result_json", sa.Text, nullable=True),
        sa.Column("verdict", sa.String(16), nullable=True),
        sa.Column("finished_at", sa.DateTime, nullable=True),
        sa.Column("superseded_at", sa.DateTime, nullable=False),
        sa.Column("superseded_by", sa.Integer, sa.ForeignKey("api_keys.id"), nullable=True),
        sa.UniqueConstraint("scan_id", "version", name="uq_scan_versions_scan_id_version"),
    )
    op.create_index("ix_scan_versions_scan_id", "scan_versions", ["scan_id"])


def downgrade() -> None:
    op.drop_index("ix_scan_versions_scan_id", table_name="scan_versions")
    op.drop_table("scan_versions")
    with op.batch_alter_table("scans") as batch:
        batch.drop_constraint("uq_scans_submitted_by_sha256_protect", type_="unique")
        batch.create_unique_constraint("uq_scans_submitted_by_sha256", ["submitted_by", "sha256"])
        for column in ("result_version", "reviewer_protect_json", "protect_key", "protect_faces", "protect_json"):
            batch.drop_column(column)
