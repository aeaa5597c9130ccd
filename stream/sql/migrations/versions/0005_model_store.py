"""The model store: model_versions (immutable, content-addressed artifacts), model_tables (their compiled scorer's
checked tables), model_assignments (append-only history of the live and shadow roles), model_workers (what each
running worker loaded, as it last said)

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("manifest", sa.Text, nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("added_by", sa.String(200), nullable=False),
    )
    op.create_table(
        "model_tables",
        sa.Column("version", sa.String(64), sa.ForeignKey("model_versions.version"), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "model_assignments",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("version", sa.String(64), sa.ForeignKey("model_versions.version"), nullable=True),
        sa.Column("previous", sa.String(64), nullable=True),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("set_by", sa.String(200), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
    )
    op.create_index("model_assignments_role", "model_assignments", ["role", "id"])
    op.create_table(
        "model_workers",
        sa.Column("worker", sa.String(200), primary_key=True),
        sa.Column("live", sa.String(64), nullable=True),
        sa.Column("shadow", sa.String(64), nullable=True),
        sa.Column("refused", sa.String(500), nullable=True),
        # shadow against live on the rated reviews both scored, in words (stream/observe/accuracy.py), once measured
        sa.Column("evidence", sa.String(500), nullable=True),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("model_workers")
    op.drop_index("model_assignments_role", table_name="model_assignments")
    op.drop_table("model_assignments")
    op.drop_table("model_tables")
    op.drop_table("model_versions")
