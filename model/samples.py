"""Reviews the project wrote itself: the checks of the compiled scorer, the demo without the IMDB data, the tests."""

from pathlib import Path

SAMPLE_REVIEWS = Path(__file__).resolve().parent / "sample_reviews.jsonl"
