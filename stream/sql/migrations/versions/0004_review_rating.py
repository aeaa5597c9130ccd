"""review_scores.reviewer_rating: the review's own star rating (1-10), stored with its score

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The reviewer's rating as the review event carried it (NULL: it had none, or it was scored before this
    # migration). Not movie_sentiment.rating, which is the film's mean score on a 1-10 scale.
    op.add_column("review_scores", sa.Column("reviewer_rating", sa.SmallInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("review_scores") as batch:
        batch.drop_column("reviewer_rating")
