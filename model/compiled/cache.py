"""The compiled path's tables on disk: one ``.npz`` file per model version, TensorFlow version and version of this
code, written only after the tables passed the check against TensorFlow (``model.compiled.build``).

Reading them back imports no TensorFlow: a worker that finds its tables here starts without it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from importlib import metadata
from pathlib import Path

import numpy as np

from model.compiled.tables import CharTables, FastModel, default_threads

# What the file holds and how: a file of another format is not read (and the name differs: it is built again).
# 2: the cleaning as a mode (clean_text, clean_tokens, lower_and_strip_punctuation) and whether [UNK] is pooled.
FORMAT = 2

# The code that decides what the tables hold and how they score, and the texts they were checked on: a change to any
# of it builds and checks the tables again.
_CODE = (*sorted(Path(__file__).resolve().parent.glob("*.py")), Path(__file__).resolve().parent.parent / "samples.py")


def cache_path(version: str, cache_dir: Path) -> Path:
    """The cache file of one model version, for this TensorFlow and this code of the compiled path (a change to either
    builds and checks the tables again)."""
    tf_version = "unknown"
    for dist in ("tensorflow-cpu", "tensorflow"):
        try:
            tf_version = metadata.version(dist)
            break
        except metadata.PackageNotFoundError:
            continue
    code = hashlib.sha256(b"".join(path.read_bytes() for path in _CODE)).hexdigest()[:12]
    return cache_dir / f"fast-{version}-tf{tf_version}-code{code}-f{FORMAT}.npz"


def save(fast: FastModel, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "format": np.array(FORMAT),
        "kept": fast.chars.kept,
        "lower_kept": np.array(fast.chars.lower_kept),
        "w_table": fast.w_table,
        "w_offsets": fast.w_offsets,
        "w_points": fast.w_points,
        "g_table": fast.g_table,
        "embedding": fast.embedding,
        "scales": fast.scales,
        "naive_bayes": fast.naive_bayes,
        "context": fast.context,
        "output": np.array(fast.output),
        "mode": np.array(fast.chars.mode),
        "pool_unknown": np.array(fast.pool_unknown),
        "shape": np.array([fast.ngrams, fast.sequence_length, fast.unknown_word, fast.base, fast.w_mask, fast.g_shift,
                           fast.g_mask, len(fast.dense)]),
    }  # fmt: skip
    for i, (kernel, bias, activation) in enumerate(fast.dense):
        arrays[f"dense{i}_kernel"], arrays[f"dense{i}_bias"] = kernel, bias
        arrays[f"dense{i}_activation"] = np.array(activation)
    partial = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(partial, **arrays)
    os.replace(partial, path)  # a reader never sees half a file


def load(path: Path) -> FastModel:
    with np.load(path) as f:
        if "format" not in f or int(f["format"]) != FORMAT:
            raise ValueError(f"tables of format {int(f['format']) if 'format' in f else 1}, not {FORMAT}")
        ngrams, sequence_length, unknown, base, w_mask, g_shift, g_mask, layers = (int(v) for v in f["shape"])
        fast = FastModel.__new__(FastModel)
        fast.chars = CharTables(lower_kept=str(f["lower_kept"]), kept=f["kept"], mode=int(f["mode"]))
        fast.pool_unknown = bool(f["pool_unknown"])
        fast.ngrams, fast.sequence_length, fast.unknown_word, fast.base = ngrams, sequence_length, unknown, base
        fast.w_mask, fast.g_shift, fast.g_mask = w_mask, g_shift, g_mask
        fast.threads = default_threads()
        for name in ("w_table", "w_offsets", "w_points", "g_table", "embedding", "scales", "naive_bayes"):
            setattr(fast, name, f[name])
        fast.context = f["context"] if "context" in f.files else np.zeros(0, np.float32)
        fast.output = str(f["output"])
        fast.dense = [
            (f[f"dense{i}_kernel"], f[f"dense{i}_bias"], str(f[f"dense{i}_activation"])) for i in range(layers)
        ]
    return fast


def load_cached(version: str, cache_dir: Path) -> FastModel | None:
    """The cached tables of this model version, or None when there are none or they cannot be read (a damaged file
    is built again)."""
    cached = cache_path(version, cache_dir)
    if not cached.exists():
        return None
    try:
        return load(cached)
    except Exception as exc:  # noqa: BLE001 - a damaged cache file is built again
        logging.getLogger("sentiment.model").warning("cannot read %s (%s): building the tables again", cached, exc)
        return None
