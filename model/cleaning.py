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


# The punctuation of ``clean_tokens``: every character that is not a letter, a digit or a space becomes a token of its
# own ("great!!" -> "great ! !", ":-)" -> ": - )"); apostrophes still go first. The compiled scorer asks TensorFlow
# which characters this matches.
TOKEN_CHARACTERS = r"[^\p{L}\p{N}\s]"

_PUNCTUATION_TOKENS = (
    (r"'", ""),
    (f"({TOKEN_CHARACTERS})", r" \1 "),
    (r"\s+", " "),
)


def _clean(texts: tf.Tensor, punctuation) -> tf.Tensor:
    texts = tf.strings.lower(texts, encoding="utf-8")
    for pattern, replacement in (*_CP1252_REPAIRS, *_HTML):
        texts = tf.strings.regex_replace(texts, pattern, replacement)
    texts = tf.strings.regex_replace(texts, "[\u2018\u2019\u00b4`]", "'")
    for pattern, replacement in (*_NEGATIONS, *punctuation):
        texts = tf.strings.regex_replace(texts, pattern, replacement)
    return tf.strings.strip(texts)


@keras.saving.register_keras_serializable(package="sentiment", name="clean_text")
def clean_text(texts: tf.Tensor) -> tf.Tensor:
    """Lowercase, repair cp1252 punctuation, strip HTML, expand negations; keep ! and ?, drop other punctuation."""
    return _clean(texts, _PUNCTUATION)


@keras.saving.register_keras_serializable(package="sentiment", name="clean_tokens")
def clean_tokens(texts: tf.Tensor) -> tf.Tensor:
    """As :func:`clean_text`, but every punctuation character is a token of its own (emoticons, "!!", "..." and
    quotes carry sentiment an n-gram can learn)."""
    return _clean(texts, _PUNCTUATION_TOKENS)


# What Keras' own ``standardize="lower_and_strip_punctuation"`` (config ``cleaning = "basic"``) removes after
# lowercasing ASCII (``tf.strings.lower`` without an encoding): keras/src/layers/preprocessing/text_vectorization.py.
KERAS_STRIPPED_CHARACTERS = r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']'


def keras_lower_and_strip_punctuation(texts: tf.Tensor) -> tf.Tensor:
    """What TextVectorization does with ``standardize="lower_and_strip_punctuation"`` (for tests and debugging; the
    model keeps the name, and Keras its own code)."""
    return tf.strings.regex_replace(tf.strings.lower(texts), KERAS_STRIPPED_CHARACTERS, "")


# config name (training.config) -> standardize function (a name: Keras' own)
CLEANINGS = {"full": clean_text, "tokens": clean_tokens, "basic": "lower_and_strip_punctuation"}

# standardize function's name -> the characters its punctuation pass acts on (the compiled scorer measures them
# from TensorFlow), and what becomes of them: "drop" (a space; but ! and ? are words of their own), "word" (each a
# word of its own), "strip" (removed: "a.b" is one word)
PUNCTUATION_RULES = {
    "clean_text": (DROPPED_CHARACTERS, "drop"),
    "clean_tokens": (TOKEN_CHARACTERS, "word"),
    "lower_and_strip_punctuation": (KERAS_STRIPPED_CHARACTERS, "strip"),
}
_STANDARDIZE = {**CLEANINGS, "basic": keras_lower_and_strip_punctuation}


def clean(texts: list[str], cleaning: str = "full") -> list[str]:
    """Python convenience: the cleaned form of each text, as the model sees it."""
    out = _STANDARDIZE[cleaning](tf.constant(texts, dtype=tf.string)).numpy()
    return [t.decode("utf-8") for t in out]


def words(texts: list[str], cleaning: str = "full") -> list[list[str]]:
    """Python convenience: the words of each text as the model's vectorizer splits them (``tf.strings.split`` of
    the cleaned text: on ASCII whitespace, \v included, which ``\\s`` does not match)."""
    split = tf.strings.split(_STANDARDIZE[cleaning](tf.constant(texts, dtype=tf.string)))
    return [[w.decode("utf-8") for w in row] for row in split.to_list()]
