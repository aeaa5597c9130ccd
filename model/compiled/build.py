"""Building the compiled path's tables from the exported Keras model, and checking them against TensorFlow.

:func:`from_keras` reads the model's vocabulary, weights and cleaning and measures the installed TensorFlow's
character tables; :func:`check` scores the check texts (``model.samples.check_texts``) both ways, and
:func:`build_checked` keeps the tables in the cache only when they agree. TensorFlow is imported when a function here first runs.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.compiled.cache import cache_path, save
from model.compiled.kernels import BASIC, TEXT, TOKENS
from model.compiled.tables import CharTables, FastModel
from model.keras_model import import_keras, import_tensorflow, model_parts
from model.samples import check_texts

AGREEMENT_TOLERANCE = 1e-5


@dataclass(frozen=True)
class Verdict:
    """How a model would be served: its compiled tables when they score the check texts as TensorFlow does, else
    None and why (``worst``: the largest difference on the check texts, when the tables could be built)."""

    fast: FastModel | None
    worst: float | None
    problem: str | None = None

    def summary(self) -> str:
        """One line: "served compiled: ..." or "served by TensorFlow: ..." """
        if self.fast is not None:
            return f"served compiled: largest difference from TensorFlow {self.worst:.2g} on the check texts"
        return f"served by TensorFlow, not compiled: {self.problem}"


def check(keras_model, tensorflow_scores: Callable[[list[str]], np.ndarray]) -> Verdict:
    """Build the tables of ``keras_model`` and score the check texts both ways (``model.samples.check_texts``)."""
    try:
        fast = from_keras(keras_model)
        texts = check_texts()
        worst = agreement(fast, tensorflow_scores_of(tensorflow_scores, texts), texts)
    except Exception as exc:  # noqa: BLE001 - any failure leaves the TensorFlow path, which is always right
        return Verdict(None, None, f"{type(exc).__name__}: {exc}")
    if worst > AGREEMENT_TOLERANCE:
        return Verdict(
            None,
            worst,
            f"it differs from the TensorFlow model by {worst:.2g} on the check texts "
            f"(tolerance {AGREEMENT_TOLERANCE:g})",
        )
    return Verdict(fast, worst)


def tensorflow_scores_of(tensorflow_scores: Callable[[list[str]], np.ndarray], texts: list[str]) -> np.ndarray:
    """``tensorflow_scores`` of ``texts``, a few at a time: TensorFlow holds a batch's embedding vectors, padded to the
    sequence length, at once (16 texts of 50,000 n-grams of 512 numbers: 1.6 GB)."""
    parts = [np.asarray(tensorflow_scores(texts[i : i + 16]), np.float32).reshape(-1) for i in range(0, len(texts), 16)]
    return np.concatenate(parts) if parts else np.empty(0, np.float32)


def build_checked(
    keras_model, version: str, cache_dir: Path | None, tensorflow_scores: Callable[[list[str]], np.ndarray]
) -> FastModel | None:
    """The tables of ``keras_model``, if they score the check texts as ``tensorflow_scores`` does (within
    ``AGREEMENT_TOLERANCE``), kept in ``cache_dir`` (when given); else None, with a warning that says why."""
    log = logging.getLogger("sentiment.model")
    verdict = check(keras_model, tensorflow_scores)
    if verdict.fast is None:
        if verdict.worst is None:
            log.warning("compiled scoring is off (%s): scoring with TensorFlow", verdict.problem)
        else:
            log.warning("compiled scoring is off: %s: scoring with TensorFlow", verdict.problem)
        return None
    fast = verdict.fast
    if cache_dir is not None:  # only tables that passed the check are kept
        cached = cache_path(version, cache_dir)
        try:
            save(fast, cached)
        except OSError as exc:
            log.info("could not keep the compiled scorer's tables in %s (%s): built again next start", cached, exc)
    return fast


def agreement(fast: FastModel, keras_scores, texts: list[str]) -> float:
    """The largest difference between the compiled path's scores and the TensorFlow model's on ``texts``."""
    return float(np.max(np.abs(fast.score(texts).scores - np.asarray(keras_scores, dtype=np.float32)), initial=0.0))


def from_keras(keras_model) -> FastModel:
    """Read the exported model's vocabulary, weights and cleaning; measure TensorFlow's character tables."""
    keras = import_keras()
    from model.layers import DistinctSum, ForgetUnknown, KnownAverage

    vectorizer, core, _ = model_parts(keras_model)
    config = vectorizer.get_config()
    cleaning = _cleaning_of(config["standardize"])
    ngrams = config["ngrams"]
    ngrams = max(ngrams) if isinstance(ngrams, tuple | list) else (ngrams or 1)
    if isinstance(config["ngrams"], tuple | list) and tuple(config["ngrams"]) != tuple(range(1, ngrams + 1)):
        raise ValueError(f"the fast path handles n-grams 1..n; this model has {config['ngrams']}")
    embedding_layer = next(layer for layer in core.layers if isinstance(layer, keras.layers.Embedding))
    weights = {w.path.split("/")[-1]: np.asarray(w.numpy()) for w in embedding_layer.weights}
    embedding, scales = weights["embeddings"], weights.get("embeddings_scale")  # int8: Keras divides by the scale
    if embedding.dtype not in (np.int8, np.float32):
        raise ValueError(f"the fast path reads int8 or float32 embeddings; this model has {embedding.dtype}")
    dense = []
    for layer in core.layers:
        if isinstance(layer, keras.layers.Dense):
            kernel, bias = (np.asarray(w.numpy(), dtype=np.float32) for w in layer.weights)
            dense.append((kernel, bias, layer.get_config()["activation"]))
    naive_bayes = next((layer for layer in core.layers if isinstance(layer, DistinctSum)), None)
    context = next((layer for layer in core.layers if isinstance(layer, KnownAverage)), None)
    activations = [layer for layer in core.layers if isinstance(layer, keras.layers.Activation)]
    if len(activations) > 1 or (activations and activations[0] is not core.layers[-1]):
        raise ValueError("the fast path handles one activation layer, the model's last")
    return FastModel(
        chars=measure_chars(cleaning),
        vocabulary=vectorizer.get_vocabulary(),
        embedding=embedding,
        scales=scales,
        dense=dense,
        ngrams=ngrams,
        sequence_length=config["output_sequence_length"],
        naive_bayes=None if naive_bayes is None else np.asarray(naive_bayes.weight.numpy(), dtype=np.float32),
        output=activations[0].get_config()["activation"] if activations else "linear",
        # mask_unknown = false: no ForgetUnknown, and the embedding (mask_zero) pools [UNK] like any n-gram
        pool_unknown=not any(isinstance(layer, ForgetUnknown) for layer in core.layers),
        context=None if context is None else np.asarray(context.weight.numpy(), dtype=np.float32),
    )


def _cleaning_of(standardize) -> str:
    """The name of the model's cleaning function (its vectorizer's ``standardize``), if the fast path knows it."""
    from model.cleaning import PUNCTUATION_RULES

    name = getattr(standardize, "__name__", standardize)
    if name not in PUNCTUATION_RULES:
        raise ValueError(
            f"the fast path knows the cleanings {', '.join(PUNCTUATION_RULES)}; this model has {standardize}"
        )
    return name


@functools.cache  # the answer of this process's TensorFlow (the tables copy nothing from it but read it)
def measure_chars(cleaning: str = "clean_text") -> CharTables:
    """Ask the installed TensorFlow what it does to every code point (about a second)."""
    tf = import_tensorflow()
    from model.cleaning import PUNCTUATION_RULES

    pattern, rule = PUNCTUATION_RULES[cleaning]
    mode = {"drop": TEXT, "word": TOKENS, "strip": BASIC}[rule]
    if mode == BASIC:
        return _measure_basic(tf, pattern)
    split_all = mode == TOKENS

    kept = np.zeros(0x110000, dtype=np.uint8)  # surrogates stay 0: punctuation
    lower_kept, other = [], []
    for start in range(1, 0x110000, 0x10000):  # a plane at a time: a small peak of memory
        points = [c for c in range(start, min(start + 0x10000, 0x110000)) if not 0xD800 <= c <= 0xDFFF]
        chars = [chr(c) for c in points]
        lowered = tf.strings.lower(tf.constant(chars), encoding="utf-8").numpy()
        for c, low in zip(chars, lowered):
            low = low.decode()
            if low == c and c.lower() != c:
                lower_kept.append(c)
            elif low not in (c, c.lower()):
                other.append((c, low))
        out = tf.strings.regex_replace(tf.constant(chars), pattern, "\x01").numpy()
        kept[points] = [o != b"\x01" for o in out]
    if other:
        raise ValueError(f"tf.strings.lower maps {len(other)} characters differently from Python, e.g. {other[:3]}")
    lower_kept = "".join(lower_kept)
    if split_all:
        # punctuation becomes a word of its own, unless TextVectorization's split (tf.strings.split) takes it for a
        # space, which \s does not (\v, say): 2 marks those
        punctuation = np.flatnonzero(kept == 0)
        punctuation = punctuation[(punctuation > 0) & ((punctuation < 0xD800) | (punctuation > 0xDFFF))]
        parts = tf.strings.split(tf.constant([f"a{chr(c)}b" for c in punctuation])).row_lengths().numpy()
        kept[punctuation[parts == 2]] = 2
        kept[0xD800:0xE000] = 2  # a lone surrogate (not text; the stream refuses it) is dropped, not a word
    spaces = tf.strings.regex_full_match(tf.constant([chr(c) for c in np.flatnonzero(kept == 1)]), r"\s").numpy()
    if sorted(np.flatnonzero(kept == 1)[spaces]) != [9, 10, 12, 13, 32]:
        raise ValueError("TensorFlow's \\s is not [\\t\\n\\f\\r ] here: the fast path does not know this TensorFlow")
    return CharTables(lower_kept=lower_kept, kept=kept, mode=mode)


def _measure_basic(tf, pattern: str) -> CharTables:
    """Keras' ``lower_and_strip_punctuation``: ``tf.strings.lower`` without an encoding (which characters it
    changes: ASCII letters only, checked), ``pattern`` removed (0 in ``kept``), then the whitespace split (2)."""
    kept = np.ones(0x110000, dtype=np.uint8)
    changed = []
    for start in range(1, 0x110000, 0x10000):
        points = [c for c in range(start, min(start + 0x10000, 0x110000)) if not 0xD800 <= c <= 0xDFFF]
        chars = tf.constant([chr(c) for c in points])
        lowered = tf.strings.lower(chars).numpy()
        changed += [c for c, low in zip(points, lowered) if low != chr(c).encode()]
        stripped = tf.strings.regex_replace(chars, pattern, "").numpy()
        kept[[c for c, out in zip(points, stripped) if out == b""]] = 0
        parts = tf.strings.split(tf.strings.join(["a", chars, "b"])).row_lengths().numpy()
        kept[[c for c, n in zip(points, parts) if n == 2]] = 2
    if changed != list(range(ord("A"), ord("Z") + 1)):
        raise ValueError("tf.strings.lower without an encoding changes other characters than A-Z here")
    return CharTables(lower_kept="", kept=kept, mode=BASIC)
