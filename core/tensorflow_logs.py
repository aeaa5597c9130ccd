"""TensorFlow's own log lines, quiet by default."""

from __future__ import annotations

import os


def quiet_tensorflow() -> None:
    """Hide TensorFlow's C++ info and warning lines (errors still show), unless ``TF_CPP_MIN_LOG_LEVEL`` says otherwise.
    Call it before importing TensorFlow or Keras: TensorFlow reads the variable once, when it loads."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
