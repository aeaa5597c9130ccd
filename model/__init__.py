"""What serving needs: the text cleaning inside the model, and loading and batch scoring of an artifact.

Nothing here imports ``training``.
"""

from model.scorer import ModelArtifact, Scorer, load_scorer

__all__ = ["ModelArtifact", "Scorer", "load_scorer"]
