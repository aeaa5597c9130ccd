"""review_scores and movie_sentiment

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "review_scores",
        sa.Column("review_id", sa.String(200), primary_key=True),
        sa.Column("movie_id", sa.String(200), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_review_scores_movie_id", "review_scores", ["movie_id"])
    op.create_table(
        "movie_sentiment",
        sa.Column("movie_id", sa.String(200), primary_key=True),
        sa.Column("review_count", sa.Integer, nullable=False),
        sa.Column("positive_count", sa.Integer, nullable=False),
        sa.Column("score_sum", sa.Float, nullable=False),
        sa.Column("mean_score", sa.Float, nullable=False),
        sa.Column("rating", sa.Float, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("movie_sentiment")
    op.drop_index("ix_review_scores_movie_id", table_name="review_scores")
    op.drop_table("review_scores")
