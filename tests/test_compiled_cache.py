"""The compiled scorer's tables: built and checked against TensorFlow once, kept in the cache only when they agree,
read back without TensorFlow (in the worker's process or built by a child), built again when damaged."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest

from core.settings import DEFAULT_MODEL
from model.compiled import build
from model.compiled.cache import load
from model.samples import hostile_texts
from model.scorer import load_scorer


def test_the_tables_are_read_from_the_cache_on_the_next_start(compiled_cache, fast_scorer):
    cached = list(compiled_cache.glob("fast-*.npz"))
    assert len(cached) == 1, cached
    again = load(cached[0])
    texts = hostile_texts()
    np.testing.assert_array_equal(again.score(texts).scores, fast_scorer.fast.score(texts).scores)


@pytest.mark.integration  # loads the model into TensorFlow
def test_a_fast_path_that_disagrees_falls_back_to_tensorflow_and_is_not_cached(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(build, "agreement", lambda *args: 0.25)
    with caplog.at_level(logging.WARNING, logger="sentiment.model"):
        scorer = load_scorer(DEFAULT_MODEL, scoring="compiled", cache_dir=tmp_path)
    assert scorer.scoring == "tensorflow"
    assert "differs from the TensorFlow model by 0.25" in caplog.text
    assert scorer.score(["a wonderful film"])[0] > 0.5
    assert not list(tmp_path.glob("fast-*.npz")), "tables that failed the check must not be kept"


def scoring_in_a_fresh_process(cache_dir, *, build_in_child: bool = False, timeout: float = 120) -> list[str]:
    """Load the default model with compiled scoring in a new Python, score one text, import the worker's module;
    returns [the scoring path, whether TensorFlow got imported]."""
    code = (
        "import sys; from pathlib import Path; from model.scorer import load_scorer; "
        f"s = load_scorer({str(DEFAULT_MODEL)!r}, scoring='compiled', cache_dir=Path({str(cache_dir)!r}), "
        f"build_in_child={build_in_child}); s.score(['a wonderful film']); import stream.app; "
        "print(s.scoring, 'tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, check=True)
    assert out.stdout.split(), out.stderr[-2000:]
    return out.stdout.split()[-2:]


def test_from_cached_tables_tensorflow_is_not_imported(compiled_cache):
    """A worker that starts from cached tables never loads TensorFlow (about 530 MB) unless it is asked for it."""
    assert scoring_in_a_fresh_process(compiled_cache) == ["compiled", "False"]


def test_a_damaged_cache_file_is_built_again(tmp_path, compiled_cache):
    cached = next(compiled_cache.glob("fast-*.npz"))
    damaged = tmp_path / cached.name
    damaged.write_bytes(cached.read_bytes()[:1000])
    scorer = load_scorer(DEFAULT_MODEL, scoring="compiled", cache_dir=tmp_path)
    assert scorer.scoring == "compiled"
    assert damaged.stat().st_size == cached.stat().st_size  # written again, whole


def test_tables_of_an_older_format_are_built_again_not_misread(tmp_path, compiled_cache, caplog):
    """Format 1 had no [UNK] pooling nor cleaning mode: read as today's, a model that pools [UNK] would score wrong.
    Its file is not found under today's name, and one given by hand is refused."""
    from model.compiled.cache import FORMAT, cache_path, load_cached

    cached = next(compiled_cache.glob("fast-*.npz"))
    assert cached.name.endswith(f"-f{FORMAT}.npz") and FORMAT >= 2
    with np.load(cached) as f:
        arrays = {k: f[k] for k in f.files if k not in ("format", "mode", "pool_unknown")}
    old = cache_path("old", tmp_path)
    np.savez(old, **arrays, split_all=np.array(True))
    with pytest.raises(ValueError, match=f"tables of format 1, not {FORMAT}"):
        load(old)
    with caplog.at_level(logging.WARNING, logger="sentiment.model"):
        assert load_cached("old", tmp_path) is None
    assert "building the tables again" in caplog.text


def test_an_unknown_scoring_choice_is_refused():
    with pytest.raises(ValueError, match="compiled, tensorflow"):
        load_scorer(DEFAULT_MODEL, scoring="gpu")


@pytest.mark.integration  # builds the tables in fresh processes
def test_a_worker_builds_missing_tables_in_a_child_and_never_loads_tensorflow(tmp_path):
    assert scoring_in_a_fresh_process(tmp_path, build_in_child=True, timeout=300) == ["compiled", "False"]
    assert len(list(tmp_path.glob("fast-*.npz"))) == 1
