"""The exported Keras model's arithmetic, compiled with numba, for scoring many reviews fast.

The model stays the one Keras model trained by ``training/``; this module reads its weights and
vocabulary and computes the same function without TensorFlow:

- ``model.cleaning.clean_text`` pass for pass on code points (Python's ``str.lower`` first). Where
  Python and TensorFlow could disagree (which characters are letters or digits in each one's Unicode
  tables, which ones ``tf.strings.lower`` lowercases, that it stops at a NUL), the tables are measured
  from the installed TensorFlow when a :class:`FastModel` is built, so the two cannot drift apart;
- each word gets a number from a hash table, each n-gram one 64-bit key packed from its words'
  numbers, looked up in a second hash table;
- the masked average of the embedding rows, then the two dense layers in numpy.

Scores equal the TensorFlow model's within 1e-5 (tests/test_fast.py: every ``imdb_test`` review and
hostile text: every script, emoji, NUL, control characters, 100k-character texts). The compiled part
runs without the GIL, so a thread can score while the event loop runs, and spreads a batch's texts over
``threads`` cores (``SENTIMENT_SCORING_THREADS``; each text is scored by one thread, so results do not depend on it).
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
from numba import njit, prange

# --- cleaning and scoring, compiled ------------------------------------------------------------------------------
# The passes of model.cleaning.clean_text, one after another, on code points. Python lowercases first (str.lower is
# tf.strings.lower but for the characters measured in CharTables.lower_kept); the rest runs here, without the GIL.


@njit(cache=True, inline="always")
def _is_ws(c):  # RE2's \s: [\t\n\f\r ]
    return c == 32 or c == 9 or c == 10 or c == 12 or c == 13


@njit(cache=True, inline="always")
def _is_word(c):  # RE2's \w for \b: [0-9A-Za-z_]
    return (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122) or c == 95


@njit(cache=True)
def _matches(src, n, i, literal):
    if i + len(literal) > n:
        return False
    for k in range(len(literal)):
        if src[i + k] != literal[k]:
            return False
    return True


@njit(cache=True)
def _put(dst, m, literal):
    for k in range(len(literal)):
        dst[m + k] = literal[k]
    return m + len(literal)


_L_DOTS = np.array([32, 46, 46, 46, 32], dtype=np.uint32)  # " ... "
_L_DASH = np.array([32, 45, 32], dtype=np.uint32)  # " - "
_L_AND = np.array([32, 97, 110, 100, 32], dtype=np.uint32)  # " and "
_L_WILL_NOT = np.array([ord(c) for c in "will not"], dtype=np.uint32)
_L_CAN_NOT = np.array([ord(c) for c in "can not"], dtype=np.uint32)
_L_NOT = np.array([ord(c) for c in " not"], dtype=np.uint32)
_L_WONT = np.array([ord(c) for c in "won't"], dtype=np.uint32)
_L_CANT = np.array([ord(c) for c in "can't"], dtype=np.uint32)
_L_NT = np.array([ord(c) for c in "n't"], dtype=np.uint32)
_E_AMP = np.array([ord(c) for c in "&amp;"], dtype=np.uint32)
_E_38 = np.array([ord(c) for c in "&#38;"], dtype=np.uint32)
_E_QUOT = np.array([ord(c) for c in "&quot;"], dtype=np.uint32)
_E_34 = np.array([ord(c) for c in "&#34;"], dtype=np.uint32)
_E_APOS = np.array([ord(c) for c in "&apos;"], dtype=np.uint32)
_E_39 = np.array([ord(c) for c in "&#39;"], dtype=np.uint32)


@njit(cache=True)
def _repairs(src, n, dst):
    """UTF-8 to code points; ASCII lowercasing (Python's str.lower did the rest); the text cut at a NUL as
    tf.strings.lower does; the cp1252 punctuation held as C1 controls, then the curly quotes (one character each: one
    table, in TensorFlow's order)."""
    m = 0
    i = 0
    while i < n:
        c = np.uint32(src[i])
        if c < 0x80:
            if c == 0:
                break
            dst[m] = c + 32 if 65 <= c <= 90 else (39 if c == 96 else c)
            m += 1
            i += 1
            continue
        if c >= 0xF0:  # Python wrote these bytes: the sequences are whole
            c = ((c & 0x07) << 18) | ((np.uint32(src[i + 1]) & 0x3F) << 12) | ((np.uint32(src[i + 2]) & 0x3F) << 6)
            c |= np.uint32(src[i + 3]) & 0x3F
            i += 4
        elif c >= 0xE0:
            c = ((c & 0x0F) << 12) | ((np.uint32(src[i + 1]) & 0x3F) << 6) | (np.uint32(src[i + 2]) & 0x3F)
            i += 3
        else:
            c = ((c & 0x1F) << 6) | (np.uint32(src[i + 1]) & 0x3F)
            i += 2
        if 0x80 <= c <= 0x9F:
            if c == 0x91 or c == 0x92:
                dst[m] = 39
                m += 1
            elif c == 0x93 or c == 0x94:
                dst[m] = 34
                m += 1
            elif c == 0x96 or c == 0x97:
                m = _put(dst, m, _L_DASH)
            elif c == 0x85:
                m = _put(dst, m, _L_DOTS)
            else:
                dst[m] = 32
                m += 1
        elif c == 0x2018 or c == 0x2019 or c == 0xB4:
            dst[m] = 39
            m += 1
        else:
            dst[m] = c
            m += 1
    return m


@njit(cache=True)
def _br_tags(src, n, dst):
    """<\\s*br\\s*/?\\s*> -> " " """
    m = 0
    i = 0
    while i < n:
        if src[i] == 60:
            j = i + 1
            while j < n and _is_ws(src[j]):
                j += 1
            if j + 1 < n and src[j] == 98 and src[j + 1] == 114:
                j += 2
                while j < n and _is_ws(src[j]):
                    j += 1
                if j < n and src[j] == 47:
                    j += 1
                while j < n and _is_ws(src[j]):
                    j += 1
                if j < n and src[j] == 62:
                    dst[m] = 32
                    m += 1
                    i = j + 1
                    continue
        dst[m] = src[i]
        m += 1
        i += 1
    return m


@njit(cache=True)
def _tags(src, n, dst):
    """<[^>]{0,200}> -> " " """
    m = 0
    i = 0
    while i < n:
        if src[i] == 60:
            j = i + 1
            limit = min(n, i + 202)
            while j < limit and src[j] != 62:
                j += 1
            if j < limit and src[j] == 62:
                dst[m] = 32
                m += 1
                i = j + 1
                continue
        dst[m] = src[i]
        m += 1
        i += 1
    return m


@njit(cache=True)
def _entity_length(src, n, i):
    """Length of &[a-z]{2,8}; or &#[0-9]{1,6}; at i, or 0."""
    j = i + 1
    if j < n and src[j] == 35:
        j += 1
        k = j
        while k < n and k - j < 6 and 48 <= src[k] <= 57:
            k += 1
        if k > j and k < n and src[k] == 59:
            return k + 1 - i
        return 0
    k = j
    while k < n and k - j < 8 and 97 <= src[k] <= 122:
        k += 1
    if k - j >= 2 and k < n and src[k] == 59:
        return k + 1 - i
    return 0


@njit(cache=True)
def _entities(src, n, dst):
    """&amp; -> " and ", &quot; (and friends) -> "'", any other entity -> " " (each '&' starts at most one)."""
    m = 0
    i = 0
    while i < n:
        if src[i] == 38:
            if _matches(src, n, i, _E_AMP) or _matches(src, n, i, _E_38):
                m = _put(dst, m, _L_AND)
                i += 5
                continue
            if _matches(src, n, i, _E_QUOT) or _matches(src, n, i, _E_APOS):
                dst[m] = 39
                m += 1
                i += 6
                continue
            if _matches(src, n, i, _E_34) or _matches(src, n, i, _E_39):
                dst[m] = 39
                m += 1
                i += 5
                continue
            length = _entity_length(src, n, i)
            if length:
                dst[m] = 32
                m += 1
                i += length
                continue
        dst[m] = src[i]
        m += 1
        i += 1
    return m


@njit(cache=True)
def _negations(src, n, dst):
    """\\bwon't\\b -> "will not", \\bcan't\\b -> "can not", n't\\b -> " not" (ASCII word boundaries)."""
    m = 0
    i = 0
    while i < n:
        c = src[i]
        if c == 119 or c == 99 or c == 110:  # w, c, n
            boundary_before = i == 0 or not _is_word(src[i - 1])
            if (
                c == 119
                and boundary_before
                and _matches(src, n, i, _L_WONT)
                and (i + 5 == n or not _is_word(src[i + 5]))
            ):
                m = _put(dst, m, _L_WILL_NOT)
                i += 5
                continue
            if (
                c == 99
                and boundary_before
                and _matches(src, n, i, _L_CANT)
                and (i + 5 == n or not _is_word(src[i + 5]))
            ):
                m = _put(dst, m, _L_CAN_NOT)
                i += 5
                continue
            if c == 110 and _matches(src, n, i, _L_NT) and (i + 3 == n or not _is_word(src[i + 3])):
                m = _put(dst, m, _L_NOT)
                i += 3
                continue
        dst[m] = c
        m += 1
        i += 1
    return m


@njit(cache=True)
def _words(src, n, kept, starts, ends, out):
    """Drop apostrophes, make ! and ? words of their own, drop other punctuation, split on whitespace.

    The words are written one after another into ``out`` (``starts``/``ends`` index it); returns how many."""
    count = 0
    m = 0
    in_word = False
    for i in range(n):
        c = src[i]
        if c == 39:
            continue
        if c == 33 or c == 63:
            if in_word:
                ends[count] = m
                count += 1
                in_word = False
            starts[count] = m
            out[m] = c
            m += 1
            ends[count] = m
            count += 1
        elif kept[c] and not _is_ws(c):
            if not in_word:
                starts[count] = m
                in_word = True
            out[m] = c
            m += 1
        elif in_word:
            ends[count] = m
            count += 1
            in_word = False
    if in_word:
        ends[count] = m
        count += 1
    return count


@njit(cache=True)
def _clean(text, kept):
    """One lowercased text's words, from its UTF-8 bytes: (code points, word starts, word ends, word count)."""
    n = len(text)
    size = 5 * n + 8  # the longest growth: one character (at least one byte) to " ... "
    a = np.empty(size, dtype=np.uint32)
    b = np.empty(size, dtype=np.uint32)
    n = _repairs(text, n, a)
    # a pass whose first character is absent would copy the text unchanged: skip it
    tag = amp = apostrophe = False
    for i in range(n):
        c = a[i]
        if c < 61:
            tag |= c == 60
            amp |= c == 38
            apostrophe |= c == 39
    if tag:
        n = _br_tags(a, n, b)
        n = _tags(b, n, a)
    if amp:
        n = _entities(a, n, b)
        a, b = b, a
    if apostrophe:
        n = _negations(a, n, b)
        a, b = b, a
    starts = np.empty(n + 1, dtype=np.int64)
    ends = np.empty(n + 1, dtype=np.int64)
    count = _words(a, n, kept, starts, ends, b)
    return b, starts, ends, count


@njit(cache=True, inline="always")
def _word_hash(buf, start, end):
    h = np.uint64(0xCBF29CE484222325)  # FNV-1a over the code points
    for k in range(start, end):
        h = (h ^ np.uint64(buf[k])) * np.uint64(0x100000001B3)
    return h


@njit(cache=True)
def _word_number(buf, start, end, h, first, w_table, w_offsets, w_points, mask, unknown):
    """The number of the word buf[start:end] with hash h, or ``unknown`` (a slot is (hash, number); number 0: empty).

    ``first`` is the hash in the word's first slot, read earlier: a different one sends it to probing at once."""
    s = np.int64(h & np.uint64(mask))
    length = end - start
    checked = first
    while True:
        if checked == h:
            number = np.int64(w_table[2 * s + 1])
            o = w_offsets[number - 1]
            if w_offsets[number] - o == length:
                same = True
                for k in range(length):
                    if w_points[o + k] != buf[start + k]:
                        same = False
                        break
                if same:
                    return number
        elif w_table[2 * s + 1] == 0:
            return unknown
        s = (s + 1) & mask
        checked = w_table[2 * s]


@njit(cache=True)
def _probe(key, g_table, s, mask):
    """Linear probing from the slot after ``s`` (a slot is (key, vocabulary index); key -1: empty)."""
    while True:
        s = (s + 1) & mask
        found = g_table[2 * s]
        if found == key:
            return g_table[2 * s + 1]
        if found == -1:
            return 0


@njit(cache=True, nogil=True, parallel=True)
def _score_batch(
    points,
    offsets,
    kept,
    w_table,
    w_offsets,
    w_points,
    w_mask,
    unknown,
    base,
    g_table,
    g_shift,
    g_mask,
    embedding,
    scales,
    width,
    cap,
):
    texts = len(offsets) - 1
    dim = embedding.shape[1]
    sums = np.zeros((texts, dim), dtype=np.float64)
    ngrams = np.zeros(texts, dtype=np.int32)
    known = np.zeros(texts, dtype=np.int32)
    for t in prange(texts):
        buf, starts, ends, count = _clean(points[offsets[t] : offsets[t + 1]], kept)
        # the words' numbers, in stages as the n-grams below: hashes and first slots, then the checks
        hashes = np.empty(count, dtype=np.uint64)
        for w in range(count):
            hashes[w] = _word_hash(buf, starts[w], ends[w])
        first = np.empty(count, dtype=np.uint64)
        for w in range(count):
            first[w] = w_table[2 * np.int64(hashes[w] & np.uint64(w_mask))]
        codes = np.empty(count, dtype=np.int64)
        for w in range(count):
            codes[w] = _word_number(
                buf, starts[w], ends[w], hashes[w], first[w], w_table, w_offsets, w_points, w_mask, unknown
            )
        # the text's n-grams in TextVectorization's order (all unigrams, then bigrams, then trigrams; the first `cap`),
        # as keys; -1 for one with a word that is in no n-gram of the vocabulary
        total = 0
        for g in range(width):
            total += max(count - g, 0)
        total = min(total, cap)
        keys = np.empty(total, dtype=np.int64)
        rank = 0
        for g in range(width):
            for i in range(count - g):
                if rank >= total:
                    break
                key = codes[i]
                with_unknown = key == unknown
                for k in range(1, g + 1):
                    key = key * base + codes[i + k]
                    with_unknown |= codes[i + k] == unknown
                keys[rank] = -1 if with_unknown else key
                rank += 1
        # look them up in stages, so that the CPU waits for many memory reads at once instead of one after another:
        # first the slot each key hashes to and what that slot holds, with no branch that depends on it
        slots = np.empty(total, dtype=np.int64)
        for r in range(total):
            slots[r] = np.int64((np.uint64(keys[r]) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(g_shift))
        in_slot = np.empty(total, dtype=np.int64)
        for r in range(total):
            in_slot[r] = g_table[2 * slots[r]]
        rows = np.zeros(total, dtype=np.int64)
        hits = 0
        for r in range(total):
            key = keys[r]
            if key == -1:
                continue
            row = (
                g_table[2 * slots[r] + 1]
                if in_slot[r] == key
                else (0 if in_slot[r] == -1 else _probe(key, g_table, slots[r], g_mask))
            )
            if row >= 2:
                rows[hits] = row
                hits += 1
        known[t] = hits
        # then the embedding rows of the known ones, summed in order
        acc = np.zeros(dim, dtype=np.float64)
        for h in range(hits):
            row = rows[h]
            scale = scales[row]
            for d in range(dim):
                acc[d] += np.float32(embedding[row, d]) / scale  # as Keras dequantizes: in float32
        sums[t] = acc
        ngrams[t] = total
    return sums, ngrams, known


@njit(cache=True)
def _clean_one(points, kept):
    buf, starts, ends, count = _clean(points, kept)
    return buf, starts[:count].copy(), ends[:count].copy()


# --- the model ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CharTables:
    """What ``tf.strings.lower`` and the punctuation pass do to each character, measured from TensorFlow."""

    lower_kept: str  # characters Python lowercases and TensorFlow leaves alone (a newer Unicode in Python)
    kept: np.ndarray  # uint8 per code point: 1 where the punctuation pass keeps it (letters, digits, \s, !?)


@dataclass(frozen=True)
class Scored:
    scores: np.ndarray  # float32
    ngrams: np.ndarray  # int32, n-grams of each text (capped at the sequence length)
    known: np.ndarray  # int32, of them the ones in the vocabulary
    pooled: np.ndarray  # float32 (texts, embedding_dim)


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
    ) -> None:
        if ngrams not in (1, 2, 3):
            raise ValueError(f"the fast path handles 1- to 3-grams; this model has {ngrams}")
        self.chars = chars
        self.ngrams = ngrams
        self.sequence_length = sequence_length
        self.dense = dense
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
        _fill_word_table(self.w_points, self.w_offsets, self.w_table, self.w_mask)
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
        _fill_ngram_table(keys, self.g_table, self.g_shift, self.g_mask)

    def score(self, texts: list[str]) -> Scored:
        """Scores, n-gram counts, known n-gram counts and pooled vectors, as the Keras model computes them."""
        points, offsets = self._points(texts)
        with _KERNEL:
            numba.set_num_threads(max(1, min(self.threads, numba.config.NUMBA_NUM_THREADS)))  # this thread's setting
            sums, ngrams, known = _score_batch(
                points, offsets, self.chars.kept, self.w_table, self.w_offsets, self.w_points,
                self.w_mask, self.unknown_word, self.base, self.g_table, self.g_shift, self.g_mask,
                self.embedding, self.scales, self.ngrams, self.sequence_length,
            )  # fmt: skip
        pooled = (sums / np.maximum(known, 1)[:, None]).astype(np.float32)
        return Scored(scores=self.head(pooled), ngrams=ngrams, known=known, pooled=pooled)

    def words(self, text: str) -> list[str]:
        """The words of one text as the model sees them (``clean_text``, split on spaces), for tests and debugging."""
        points, offsets = self._points([text])
        buf, starts, ends = _clean_one(points[offsets[0] : offsets[1]], self.chars.kept)
        return [buf[a:b].tobytes().decode("utf-32-le") for a, b in zip(starts, ends)]

    def _points(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The lowercased texts' UTF-8, one array for the batch, and where each text starts in it."""
        # ASCII text is lowercased in the kernel. A lone surrogate (not Unicode text; decode_review rejects it)
        # passes through as punctuation.
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

    def head(self, pooled: np.ndarray) -> np.ndarray:
        x = pooled
        for kernel, bias, activation in self.dense:
            x = x @ kernel + bias
            if activation == "relu":
                x = np.maximum(x, 0.0)
            elif activation == "sigmoid":
                x = 1.0 / (1.0 + np.exp(-x))
            elif activation != "linear":
                raise ValueError(f"activation {activation!r} is not supported by the fast path")
        return x.reshape(-1).astype(np.float32)


@njit(cache=True)
def _fill_word_table(points, offsets, table, mask):
    for w in range(len(offsets) - 1):
        h = _word_hash(points, offsets[w], offsets[w + 1])
        s = np.int64(h & np.uint64(mask))
        while table[2 * s + 1] != 0:
            s = (s + 1) & mask
        table[2 * s] = h
        table[2 * s + 1] = w + 1


@njit(cache=True)
def _fill_ngram_table(keys, table, shift, mask):
    for i in range(len(keys)):
        s = np.int64((np.uint64(keys[i]) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(shift))
        while table[2 * s] != -1:
            s = (s + 1) & mask
        table[2 * s] = keys[i]
        table[2 * s + 1] = i + 2


def from_keras(keras_model) -> FastModel:
    """Read the exported model's vocabulary, weights and cleaning; measure TensorFlow's character tables."""
    import keras
    import tensorflow as tf

    from model.scorer import model_parts

    vectorizer, core, _ = model_parts(keras_model)
    config = vectorizer.get_config()
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
    return FastModel(
        chars=measure_chars(tf),
        vocabulary=vectorizer.get_vocabulary(),
        embedding=embedding,
        scales=scales,
        dense=dense,
        ngrams=ngrams,
        sequence_length=config["output_sequence_length"],
    )


def measure_chars(tf) -> CharTables:
    """Ask the installed TensorFlow what it does to every code point (about a second)."""
    import model.cleaning as cleaning

    pattern = next(p for p, _ in cleaning._PUNCTUATION if p.startswith("[^"))
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
    spaces = tf.strings.regex_full_match(tf.constant([chr(c) for c in np.flatnonzero(kept)]), r"\s").numpy()
    if sorted(np.flatnonzero(kept)[spaces]) != [9, 10, 12, 13, 32]:
        raise ValueError("TensorFlow's \\s is not [\\t\\n\\f\\r ] here: the fast path does not know this TensorFlow")
    return CharTables(lower_kept=lower_kept, kept=kept)


# --- a cache of the built tables, and the check that they score as TensorFlow does ----------------------------------


def cache_path(version: str, cache_dir: Path) -> Path:
    """The cache file of one model version, for this TensorFlow and this code of the fast path (a change to either
    builds and checks the tables again)."""
    import hashlib
    from importlib import metadata

    tf_version = "unknown"
    for dist in ("tensorflow-cpu", "tensorflow"):
        try:
            tf_version = metadata.version(dist)
            break
        except metadata.PackageNotFoundError:
            continue
    code = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    return cache_dir / f"fast-{version}-tf{tf_version}-code{code}.npz"


def save(fast: FastModel, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "kept": fast.chars.kept,
        "lower_kept": np.array(fast.chars.lower_kept),
        "w_table": fast.w_table,
        "w_offsets": fast.w_offsets,
        "w_points": fast.w_points,
        "g_table": fast.g_table,
        "embedding": fast.embedding,
        "scales": fast.scales,
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
        ngrams, sequence_length, unknown, base, w_mask, g_shift, g_mask, layers = (int(v) for v in f["shape"])
        fast = FastModel.__new__(FastModel)
        fast.chars = CharTables(lower_kept=str(f["lower_kept"]), kept=f["kept"])
        fast.ngrams, fast.sequence_length, fast.unknown_word, fast.base = ngrams, sequence_length, unknown, base
        fast.w_mask, fast.g_shift, fast.g_mask = w_mask, g_shift, g_mask
        fast.threads = default_threads()
        for name in ("w_table", "w_offsets", "w_points", "g_table", "embedding", "scales"):
            setattr(fast, name, f[name])
        fast.dense = [
            (f[f"dense{i}_kernel"], f[f"dense{i}_bias"], str(f[f"dense{i}_activation"])) for i in range(layers)
        ]
    return fast


def hostile_texts() -> list[str]:
    """Texts that stress the cleaning: every script, emoji, NUL, controls, markup, long and empty ones."""
    scripts = (
        "Ça a été un très bon film, déjà vu? Nein! Größe STRASSE İstanbul ΟΔΟΣ ΣΊΣΥΦΟΣ Ⱟ Ꟁ "
        "Отличный фильм! 素晴らしい映画でした。 최고의 영화 ممتاز جدا סרט מעולה बहुत अच्छी फिल्म "
        "ภาพยนตร์ที่ดี ዓለም ᏣᎳᎩ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ①②③ ½ ٣٤ 𐕰𐕱"
    )
    return [
        "",
        " ",
        "!!!???",
        scripts,
        scripts.upper(),
        "great \x00 movie, the rest is cut off: terrible awful",
        "\x00starts with NUL",
        "ctrl\x01\x02\x07\x08\x0b\x0c\x1b\x1c\x1f\x7f chars \x85 and \x91quoted\x92 \x93dq\x94 \x96 dash",
        "emoji 😀😂👍🏽👨‍👩‍👧 🎬 great ❤️ film 🇫🇷",
        "<br/><BR />a<b>bold</b> <a href='x'>link</a> &amp; &#38; &quot;q&quot; &apos; &#39; &nbsp; &#123456; &x;",
        "<" + "x" * 250 + ">after a long tag <\tbr\t/\t>",
        "I won't, can't, didn't, isn't WON'T ‘curly’ `back` ´acute´ rock'n'roll n't",
        "\u2028line\u2029sep\u00a0nbsp\u3000ideographic\u200bzero\ufeffbom",
        "a" * 3000,
        " ".join(["word"] * 3000),
        " ".join(f"w{i % 977} good bad" for i in range(34000)),  # ~100k characters, far past 2,500 n-grams
    ]


def agreement(fast: FastModel, keras_scores, texts: list[str]) -> float:
    """The largest difference between the fast path's scores and the TensorFlow model's on ``texts``."""
    return float(np.max(np.abs(fast.score(texts).scores - np.asarray(keras_scores, dtype=np.float32)), initial=0.0))


def _main(argv: list[str]) -> int:
    """``python -m model.fast MODEL_FILE CACHE_DIR``: build, check and keep the tables (what load_scorer's
    ``build_in_child`` runs). Exit 1, with the reason as the last line on stderr, when they are not kept."""
    import logging
    import sys

    from model.scorer import ModelArtifact, Scorer, _checked_fast_model, _keras

    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    artifact = ModelArtifact.at(argv[0])
    keras_model = _keras().models.load_model(artifact.model_file, compile=False)
    scorer = Scorer(keras_model, artifact.version, model_file=artifact.model_file)
    if _checked_fast_model(scorer, Path(argv[1])) is None:
        return 1
    if not cache_path(artifact.version, Path(argv[1])).exists():
        print(f"the tables could not be written to {argv[1]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1:]))
