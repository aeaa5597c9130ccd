"""The Keras model as numpy arrays (:class:`FastModel`): a word table, an n-gram hash table, the embedding and the
dense head, built from the model's vocabulary and weights, and scoring a batch with the numba kernels.

Nothing here imports TensorFlow: serving from cached tables (``model.compiled.cache``) needs only this.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass

import numba
import numpy as np

from model.compiled.kernels import BASIC, TEXT, TOKENS, fill_ngram_table, fill_word_table, score_batch, vectorize_one


@dataclass(frozen=True)
class CharTables:
    """What ``tf.strings.lower`` and the punctuation pass do to each character, measured from TensorFlow."""

    lower_kept: str  # characters Python lowercases and TensorFlow leaves alone (a newer Unicode in Python)
    # uint8 per code point: 1 where the punctuation pass keeps it in a word (letters, digits, \s, ...), 2 where the
    # vectorizer's split takes it for a space; 0: punctuation (BASIC: removed, so that it joins its neighbours)
    kept: np.ndarray
    # the cleaning (model.compiled.kernels): TEXT (clean_text: ! and ? words of their own, other punctuation
    # dropped), TOKENS (clean_tokens: every punctuation character a word), BASIC (Keras' lower_and_strip_punctuation)
    mode: int = TEXT

    @property
    def split_all(self) -> bool:
        """Every punctuation character a word of its own (clean_tokens)."""
        return self.mode == TOKENS


@dataclass(frozen=True)
class Scored:
    scores: np.ndarray  # float32
    ngrams: np.ndarray  # int32, n-grams of each text (capped at the sequence length)
    known: np.ndarray  # int32, of them the ones in the vocabulary
    pooled: np.ndarray  # float32 (texts, embedding_dim)
    naive_bayes: np.ndarray  # float32, the naive-Bayes branch's logit (0 without one)
    context: np.ndarray | None = None  # float32, the context branch's logit (0 without one)


# numba runs parallel loops on OpenMP or TBB where their libraries are installed, else on its own "workqueue", which
# aborts the process if two threads start a parallel loop at once (the worker's and the page's, say): one at a time.
_KERNEL = threading.Lock()


def default_threads() -> int:
    """The CPUs this process may run on (its affinity, as a container's cpuset sets it), at most 4."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(usable, 4))


def _hash_bits(entries: int) -> int:
    return max(4, int(np.ceil(np.log2(max(entries, 1) * 2.5))))  # load factor <= 0.4


class FastModel:
    """The Keras model as numpy arrays: a word table, an n-gram hash table, the embedding and the head."""

    def __init__(
        self,
        *,
        chars: CharTables,
        vocabulary: list[str],
        embedding: np.ndarray,
        scales: np.ndarray | None,
        dense: list[tuple[np.ndarray, np.ndarray, str]],
        ngrams: int,
        sequence_length: int,
        naive_bayes: np.ndarray | None = None,
        output: str = "linear",
        pool_unknown: bool = False,
        context: np.ndarray | None = None,
    ) -> None:
        if ngrams not in (1, 2, 3):
            raise ValueError(f"the fast path handles 1- to 3-grams; this model has {ngrams}")
        self.chars = chars
        self.ngrams = ngrams
        self.sequence_length = sequence_length
        self.dense = dense
        # the naive-Bayes branch's weight per vocabulary index (empty: none), added to the head's last layer before
        # ``output``, the activation after the sum ("linear" when the last dense layer has the sigmoid)
        self.naive_bayes = np.zeros(0, np.float32) if naive_bayes is None else np.asarray(naive_bayes, np.float32)
        self.output = output
        # a model without ForgetUnknown (``mask_unknown = false``): an unknown n-gram is the [UNK] row (vocabulary
        # index 1), pooled and counted in the average like any other; else it is left out of both
        self.pool_unknown = bool(pool_unknown)
        # the context branch's weight per vocabulary index (empty: none), averaged over the known n-grams and added
        # beside the naive-Bayes branch's logit
        self.context = np.zeros(0, np.float32) if context is None else np.asarray(context, np.float32)
        # int8 rows and their scales as Keras keeps them (a fourth of the memory: more of it stays in the CPU's
        # cache), or float32 rows with scales of 1 (dividing by 1 changes nothing)
        self.embedding = np.ascontiguousarray(embedding)
        self.scales = np.ones(len(embedding), dtype=np.float32) if scales is None else np.asarray(scales, np.float32)
        self.threads = default_threads()  # how many cores one batch is spread over
        self._build_tables(vocabulary)

    def _build_tables(self, vocabulary: list[str]) -> None:
        entries = [entry.split(" ") for entry in vocabulary[2:]]
        words: dict[str, int] = {}
        for grams in entries:
            for word in grams:
                if word not in words:
                    words[word] = len(words) + 1  # 1..W; 0 marks an empty slot
        self.unknown_word = len(words) + 1  # in no n-gram key of the table
        self.base = len(words) + 2
        if float(self.base) ** self.ngrams >= 2.0**63:
            raise ValueError(f"{len(words):,} words do not pack into a 64-bit key for {self.ngrams}-grams")
        # the words: their code points one after another, and a hash table from FNV-1a hash to word number
        points = [np.frombuffer(w.encode("utf-32-le"), dtype=np.uint32) for w in words]
        lengths = np.array([len(p) for p in points], dtype=np.int64)
        self.w_offsets = np.zeros(len(words) + 1, dtype=np.int64)
        np.cumsum(lengths, out=self.w_offsets[1:])
        self.w_points = np.concatenate(points) if points else np.zeros(0, dtype=np.uint32)
        bits = _hash_bits(len(words))
        self.w_mask = (1 << bits) - 1
        self.w_table = np.zeros(2 << bits, dtype=np.uint64)
        fill_word_table(self.w_points, self.w_offsets, self.w_table, self.w_mask)
        # the n-grams: each packed into one integer key, in a hash table from key to vocabulary index
        keys = np.zeros(len(entries), dtype=np.int64)
        for g in range(self.ngrams):
            column = np.array([words[e[g]] if g < len(e) else -1 for e in entries], dtype=np.int64)
            present = column >= 0
            keys[present] = keys[present] * self.base + column[present]
        bits = _hash_bits(len(keys))
        self.g_shift = 64 - bits
        self.g_mask = (1 << bits) - 1
        self.g_table = np.full(2 << bits, -1, dtype=np.int64)
        fill_ngram_table(keys, self.g_table, self.g_shift, self.g_mask)

    def score(self, texts: list[str]) -> Scored:
        """Scores, n-gram counts, known n-gram counts and pooled vectors, as the Keras model computes them."""
        points, offsets = self._points(texts)
        with _KERNEL:
            numba.set_num_threads(max(1, min(self.threads, numba.config.NUMBA_NUM_THREADS)))  # this thread's setting
            sums, ngrams, known, nb_sums, ctx_sums = score_batch(
                points, offsets, self.chars.kept, self.w_table, self.w_offsets, self.w_points,
                self.w_mask, self.unknown_word, self.base, self.g_table, self.g_shift, self.g_mask,
                self.embedding, self.row_floats, self.ngrams, self.sequence_length, self.chars.mode,
                self.has_naive_bayes, self.pool_unknown,
            )  # fmt: skip
        pooled = (sums / np.maximum(ngrams if self.pool_unknown else known, 1)[:, None]).astype(np.float32)
        naive_bayes = nb_sums.astype(np.float32)
        context = (ctx_sums / np.maximum(known, 1)).astype(np.float32)
        return Scored(self.head(pooled, naive_bayes, context), ngrams, known, pooled, naive_bayes, context)

    def vectorize(self, text: str) -> tuple[list[str], np.ndarray]:
        """One text's words as the model sees them (its cleaning, split as its vectorizer splits), and the vocabulary index of each
        of its n-grams as the Keras model's TextVectorization gives them: all unigrams, then all bigrams, then all
        trigrams, the first ``sequence_length`` of them; 1 ([UNK]) for one the model does not know."""
        points, offsets = self._points([text])
        buf, starts, ends, ids = vectorize_one(
            points[offsets[0] : offsets[1]], self.chars.kept, self.w_table, self.w_offsets, self.w_points,
            self.w_mask, self.unknown_word, self.base, self.g_table, self.g_shift, self.g_mask, self.ngrams,
            self.sequence_length, self.chars.mode,
        )  # fmt: skip
        return [buf[a:b].tobytes().decode("utf-32-le") for a, b in zip(starts, ends)], ids

    def words(self, text: str) -> list[str]:
        """The words of one text as the model sees them, for tests and debugging."""
        return self.vectorize(text)[0]

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The embedding rows of vocabulary indices ``ids``, as Keras dequantizes them (float32)."""
        return self.embedding[ids].astype(np.float32) / self.scales[ids][:, None]

    def _points(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The lowercased texts' UTF-8, one array for the batch, and where each text starts in it."""
        # ASCII text is lowercased in the kernel. A lone surrogate (not Unicode text; decode_review rejects it)
        # passes through as punctuation. BASIC lowercases ASCII only, in the kernel, and reads past a NUL.
        if self.chars.mode == BASIC:
            encoded = [t.encode("utf-8", "surrogatepass") for t in texts]
        else:
            encoded = [t.encode() if t.isascii() else self._lower(t).encode("utf-8", "surrogatepass") for t in texts]
        offsets = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        return np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets

    def _lower(self, text: str) -> str:
        if "\x00" in text:  # tf.strings.lower reads a C string: the text ends at the first NUL
            text = text[: text.index("\x00")]
        # (forty substring searches beat one regular expression with those forty characters 20 to 1)
        if not any(c in text for c in self.chars.lower_kept):
            return text.lower()
        # characters TensorFlow does not lowercase stay as they are (odd parts of the split); the rest is lowercased
        parts = re.split(f"([{re.escape(self.chars.lower_kept)}])", text)
        return "".join(part if i % 2 else part.lower() for i, part in enumerate(parts))

    @property
    def has_naive_bayes(self) -> bool:
        return len(self.naive_bayes) > 0

    @property
    def has_context(self) -> bool:
        return len(getattr(self, "context", ())) > 0

    @property
    def row_floats(self) -> np.ndarray:
        """Each vocabulary row's scale, naive-Bayes weight and context weight side by side (float32, (rows, 3)): the
        kernel reads them with one memory access."""
        if getattr(self, "_row_floats", None) is None:
            nb = self.naive_bayes if self.has_naive_bayes else np.zeros(len(self.scales), np.float32)
            ctx = self.context if self.has_context else np.zeros(len(self.scales), np.float32)
            self._row_floats = np.ascontiguousarray(np.column_stack([self.scales, nb, ctx]).astype(np.float32))
        return self._row_floats

    def context_terms(self, ids: np.ndarray) -> np.ndarray:
        """Each position's share of the context branch's logit (without its bias, which the head carries): its
        n-gram's context weight divided by the review's known count, 0 for an unknown one. Adds up to the branch's
        logit."""
        terms = np.zeros(len(ids), dtype=np.float64)
        if not self.has_context:
            return terms
        known = ids >= 2
        terms[known] = self.context[ids[known]].astype(np.float64) / max(int(known.sum()), 1)
        return terms

    def naive_bayes_terms(self, ids: np.ndarray) -> np.ndarray:
        """Each position's share of the naive-Bayes logit: its n-gram's weight divided among the positions where the
        n-gram occurs (it counts once), 0 for an unknown one. Adds up to the branch's logit."""
        terms = np.zeros(len(ids), dtype=np.float64)
        if not self.has_naive_bayes:
            return terms
        known = ids >= 2
        unique, counts = np.unique(ids[known], return_counts=True)
        share = dict(zip(unique.tolist(), (self.naive_bayes[unique].astype(np.float64) / counts).tolist()))
        terms[known] = [share[i] for i in ids[known].tolist()]
        return terms

    def head(
        self, pooled: np.ndarray, naive_bayes: np.ndarray | None = None, context: np.ndarray | None = None
    ) -> np.ndarray:
        """The score of each row of ``pooled`` (float32), with the naive-Bayes and context branches' logits of each
        row added."""
        return self._forward(pooled, naive_bayes, context)[1].reshape(-1).astype(np.float32)

    def head_gradient(self, pooled: np.ndarray, naive_bayes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The gradient of the score with respect to each row of ``pooled`` and to the naive-Bayes logit (float32), by
        backpropagation through the dense layers, operation for operation as TensorFlow's gradients of Dense, relu and
        sigmoid compute it."""
        layers, (_, out) = self._layers(pooled), self._forward(pooled, naive_bayes)
        grad = np.ones((len(pooled), 1), dtype=np.float32)
        if self.output == "sigmoid":
            grad = grad * out * (1 - out)
        nb_grad = grad.reshape(-1).copy()
        for (kernel, _, activation), (before, after) in zip(reversed(self.dense), reversed(layers)):
            if activation == "relu":
                grad = grad * (before > 0)
            elif activation == "sigmoid":
                grad = grad * after * (1 - after)
            grad = grad @ kernel.T
        return grad, nb_grad

    def _forward(
        self, pooled: np.ndarray, naive_bayes: np.ndarray | None, context: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The last dense layer's output plus the naive-Bayes and context logits (in the Keras model's order of
        addition), and the score (``output`` applied)."""
        logit = self._layers(pooled)[-1][1]
        if naive_bayes is not None and (self.has_naive_bayes or self.has_context):
            logit = logit + np.asarray(naive_bayes, np.float32).reshape(-1, 1)
        if context is not None and self.has_context:
            logit = logit + np.asarray(context, np.float32).reshape(-1, 1)
        if self.output == "sigmoid":
            return logit, 1.0 / (1.0 + np.exp(-logit))
        return logit, logit

    def _layers(self, pooled: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each dense layer's output before and after its activation."""
        x = pooled
        out = []
        for kernel, bias, activation in self.dense:
            before = x @ kernel + bias
            if activation == "relu":
                x = np.maximum(before, 0.0)
            elif activation == "sigmoid":
                x = 1.0 / (1.0 + np.exp(-before))
            elif activation == "linear":
                x = before
            else:
                raise ValueError(f"activation {activation!r} is not supported by the fast path")
            out.append((before, x))
        return out
