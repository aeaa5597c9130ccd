"""Rebuild the input-drift reference (``reference_inputs.json``) of a saved model, from the same unlabelled reviews
its score reference was made of. Models trained since the input reference exists get it from ``sentiment train``.

    .venv/bin/python -m training.reference [MODEL_FOLDER] [--data PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from core.settings import DEFAULT_MODEL
from model.scorer import ModelArtifact, input_reference, load_scorer
from training.config import TrainConfig
from training.pipeline import reference_sample, write_input_reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, help="IMDB CSV folder, aclImdb folder or tarball (default: shared data)")
    args = parser.parse_args()
    artifact = ModelArtifact.at(args.model)
    seed = artifact.metrics().get("config", {}).get("split_seed", TrainConfig.split_seed)
    texts = reference_sample(args.data, seed)
    source = f"{len(texts):,} reviews of imdb_unsup (unlabelled; films in neither train nor test)"
    write_input_reference(artifact.folder, input_reference(load_scorer(artifact), texts, source))
    print(f"wrote {artifact.folder / 'reference_inputs.json'} from {source}")


if __name__ == "__main__":
    main()
