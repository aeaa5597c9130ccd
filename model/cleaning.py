"""Text cleaning, as TensorFlow ops, so that it runs inside the exported model.

The same function standardizes text in the TextVectorization layer while training and while
serving: there is one cleaning path by construction.
"""

from __future__ import annotations

import keras
import tensorflow as tf

# Windows-1252 punctuation that the dataset holds as C1 control characters (decoded as Latin-1
# when it was collected): repair the ones that carry meaning, drop the rest.
_CP1252_REPAIRS = (
    ("[\u0091\u0092]", "'"),
    ("[\u0093\u0094]", '"'),
    ("[\u0096\u0097]", " - "),
    ("\u0085", " ... "),
    ("[\u0080-\u009f]", " "),
)

_HTML = (
    (r"<\s*br\s*/?\s*>", " "),  # the dataset's line breaks
    (r"<[^>]{0,200}>", " "),  # any other tag
    (r"&(amp|#38);", " and "),
    (r"&(quot|#34|apos|#39);", "'"),
    (r"&[a-z]{2,8};|&#\d{1,6};", " "),
)

# Negations carry sentiment: "didn't" -> "did not", "can't" -> "can not", "won't" -> "will not".
_NEGATIONS = (
    (r"\bwon't\b", "will not"),
    (r"\bcan't\b", "can not"),
    (r"n't\b", " not"),
)

# The rest of the punctuation, dropped (letters of every script stay); the compiled scorer asks TensorFlow which
# characters this matches (model.compiled.build.measure_chars).
DROPPED_CHARACTERS = r"[^\p{L}\p{N}\s!?]"

_PUNCTUATION = (
    (r"'", ""),  # "it's" -> "its", as a word of its own
    (r"([!?])", r" \1 "),  # keep ! and ? as tokens of their own
    (DROPPED_CHARACTERS, " "),
    (r"\s+", " "),
)


@keras.saving.register_keras_serializable(package="sentiment", name="clean_text")
def clean_text(texts: tf.Tensor) -> tf.Tensor:
    """Lowercase, repair cp1252 punctuation, strip HTML, expand negations, handle punctuation."""
    texts = tf.strings.lower(texts, encoding="utf-8")
    for pattern, replacement in (*_CP1252_REPAIRS, *_HTML):
        texts = tf.strings.regex_replace(texts, pattern, replacement)
    texts = tf.strings.regex_replace(texts, "[\u2018\u2019\u00b4`]", "'")
    for pattern, replacement in (*_NEGATIONS, *_PUNCTUATION):
        texts = tf.strings.regex_replace(texts, pattern, replacement)
    return tf.strings.strip(texts)


def clean(texts: list[str]) -> list[str]:
    """Python convenience: the cleaned form of each text, as the model sees it."""
    out = clean_text(tf.constant(texts, dtype=tf.string)).numpy()
    return [t.decode("utf-8") for t in out]
