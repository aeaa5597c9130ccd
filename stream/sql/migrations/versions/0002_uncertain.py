"""review_scores.uncertain and movie_sentiment.uncertain_count

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
    # rows scored before this migration were not flagged: false and 0, as the columns say
    op.add_column("review_scores", sa.Column("uncertain", sa.Boolean, nullable=False, server_default=sa.false()))
    op.add_column("movie_sentiment", sa.Column("uncertain_count", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("movie_sentiment") as batch:
        batch.drop_column("uncertain_count")
    with op.batch_alter_table("review_scores") as batch:
        batch.drop_column("uncertain")
