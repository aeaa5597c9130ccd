"""review_scores.known_share and .readable, movie_sentiment.unreadable_count; a film's mean may be NULL

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
    # Rows scored before this migration: known_share NULL (not measured), readable true (they are in their film's
    # mean, as they were), unreadable_count 0. A film whose reviews are all unreadable has no mean: NULL.
    op.add_column("review_scores", sa.Column("known_share", sa.Float, nullable=True))
    op.add_column("review_scores", sa.Column("readable", sa.Boolean, nullable=False, server_default=sa.true()))
    with op.batch_alter_table("movie_sentiment") as batch:
        batch.add_column(sa.Column("unreadable_count", sa.Integer, nullable=False, server_default="0"))
        batch.alter_column("mean_score", existing_type=sa.Float, nullable=True)
        batch.alter_column("rating", existing_type=sa.Float, nullable=True)


def downgrade() -> None:
    # A film with no readable review has no mean to keep under NOT NULL: its row goes (its reviews stay stored).
    op.execute("DELETE FROM movie_sentiment WHERE mean_score IS NULL")
    with op.batch_alter_table("movie_sentiment") as batch:
        batch.alter_column("rating", existing_type=sa.Float, nullable=False)
        batch.alter_column("mean_score", existing_type=sa.Float, nullable=False)
        batch.drop_column("unreadable_count")
    with op.batch_alter_table("review_scores") as batch:
        batch.drop_column("readable")
        batch.drop_column("known_share")
