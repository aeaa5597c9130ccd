"""model_workers says what a worker is loading and since when (so that a promote can tell a worker that is loading
a version from one that stopped reporting), and whether it runs the store's live version.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("model_workers", sa.Column("loading", sa.String(64), nullable=True))
    op.add_column("model_workers", sa.Column("loading_since", sa.DateTime(timezone=True), nullable=True))
    # the assignment (model_assignments.id) its last refusal answered: a promote tells a refusal of its own
    # assignment from an older refusal of the same version
    op.add_column("model_workers", sa.Column("refused_assignment", sa.Integer, nullable=True))


def downgrade() -> None:
    op.drop_column("model_workers", "refused_assignment")
    op.drop_column("model_workers", "loading_since")
    op.drop_column("model_workers", "loading")
