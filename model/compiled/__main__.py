"""``python -m model.compiled MODEL_FILE CACHE_DIR``: build, check and keep the tables (what ``load_scorer``'s
``build_in_child`` runs, and the Docker image). Exit 1, with the reason as the last line on stderr, when they are
not kept."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from model.compiled.build import build_checked
from model.compiled.cache import cache_path
from model.keras_model import load_keras_model
from model.scorer import ModelArtifact, Scorer


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    artifact = ModelArtifact.at(argv[0])
    cache_dir = Path(argv[1])
    scorer = Scorer(load_keras_model(artifact.model_file), artifact.version, model_file=artifact.model_file)
    fast = build_checked(
        scorer.keras_model, artifact.version, cache_dir, lambda texts: scorer.inspect_tensorflow(texts).scores
    )
    if fast is None:
        return 1
    if not cache_path(artifact.version, cache_dir).exists():
        print(f"the tables could not be written to {argv[1]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
