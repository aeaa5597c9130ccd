"""The compiled path's arithmetic, in numba: the cleaning passes and the n-gram scoring, on arrays only.

The passes of ``model.cleaning.clean_text`` (or ``clean_tokens``), one after another, on code points. Python lowercases
first (``str.lower`` is ``tf.strings.lower`` but for the characters measured in ``CharTables.lower_kept``); the rest
runs here, without the GIL. Keras' own ``lower_and_strip_punctuation`` (``BASIC``) lowercases ASCII only, here. Then
each word gets a number from a hash table, each n-gram one 64-bit key packed from its words' numbers, looked up in a
second hash table, and the known n-grams' embedding rows are summed (and the [UNK] row for each unknown one, for a
model that pools it). :class:`model.compiled.tables.
FastModel` holds the tables and calls :func:`score_batch` (and :func:`vectorize_one` for explanations); nothing here
knows TensorFlow or Keras.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# the cleanings (``CharTables.mode``): clean_text, clean_tokens, Keras' lower_and_strip_punctuation
TEXT, TOKENS, BASIC = 0, 1, 2


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
def _decode_ascii_lower(src, n, dst):
    """UTF-8 to code points, A-Z lowercased and nothing else (Keras' ``lower_and_strip_punctuation`` lowercases with
    ``tf.strings.lower`` without an encoding: byte by byte, ASCII only, a NUL kept as a character)."""
    m = 0
    i = 0
    while i < n:
        c = np.uint32(src[i])
        if c < 0x80:
            dst[m] = c + 32 if 65 <= c <= 90 else c
            i += 1
        elif c >= 0xF0:
            c = ((c & 0x07) << 18) | ((np.uint32(src[i + 1]) & 0x3F) << 12) | ((np.uint32(src[i + 2]) & 0x3F) << 6)
            dst[m] = c | (np.uint32(src[i + 3]) & 0x3F)
            i += 4
        elif c >= 0xE0:
            dst[m] = ((c & 0x0F) << 12) | ((np.uint32(src[i + 1]) & 0x3F) << 6) | (np.uint32(src[i + 2]) & 0x3F)
            i += 3
        else:
            dst[m] = ((c & 0x1F) << 6) | (np.uint32(src[i + 1]) & 0x3F)
            i += 2
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
def _words(src, n, kept, split_all, starts, ends, out):
    r"""Drop apostrophes, make punctuation words of their own (``split_all``: every character that ``kept`` does not
    keep, as ``clean_tokens``; else ! and ?, the rest dropped, as ``clean_text``), split on whitespace (``\s``, and
    where ``kept`` is 2: a character the vectorizer's split treats as a space).

    The words are written one after another into ``out`` (``starts``/``ends`` index it); returns how many."""
    count = 0
    m = 0
    in_word = False
    for i in range(n):
        c = src[i]
        if c == 39:
            continue
        if (c == 33 or c == 63) if not split_all else (kept[c] == 0 and not _is_ws(c)):
            if in_word:
                ends[count] = m
                count += 1
                in_word = False
            starts[count] = m
            out[m] = c
            m += 1
            ends[count] = m
            count += 1
        elif kept[c] == 1 and not _is_ws(c):
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
def _words_basic(src, n, kept, starts, ends, out):
    """The words of Keras' ``lower_and_strip_punctuation`` and whitespace split: the characters ``kept`` marks 0 (its
    ASCII punctuation) removed, so "a.b" is one word; split where it marks 2 (the split's whitespace).

    The words are written one after another into ``out`` (``starts``/``ends`` index it); returns how many."""
    count = 0
    m = 0
    in_word = False
    for i in range(n):
        c = src[i]
        k = kept[c]
        if k == 1:
            if not in_word:
                starts[count] = m
                in_word = True
            out[m] = c
            m += 1
        elif k == 2 and in_word:
            ends[count] = m
            count += 1
            in_word = False
    if in_word:
        ends[count] = m
        count += 1
    return count


# the cleanings (``CharTables.mode``): clean_text, clean_tokens, Keras' lower_and_strip_punctuation
TEXT, TOKENS, BASIC = 0, 1, 2


@njit(cache=True)
def _clean(text, kept, mode):
    """One text's words, from its UTF-8 bytes (lowercased by Python but for ``BASIC``): (code points, word starts,
    word ends, word count)."""
    n = len(text)
    if mode == BASIC:
        a = np.empty(n + 1, dtype=np.uint32)
        b = np.empty(n + 1, dtype=np.uint32)
        n = _decode_ascii_lower(text, n, a)
        starts = np.empty(n + 1, dtype=np.int64)
        ends = np.empty(n + 1, dtype=np.int64)
        count = _words_basic(a, n, kept, starts, ends, b)
        return b, starts, ends, count
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
    count = _words(a, n, kept, mode == TOKENS, starts, ends, b)
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


@njit(cache=True)
def _ngram_ids(
    buf, starts, ends, count, w_table, w_offsets, w_points, w_mask, unknown, base, g_table, g_shift, g_mask, width, cap
):
    """The vocabulary index of each of a text's n-grams, in TextVectorization's order (all unigrams, then bigrams,
    then trigrams; the first ``cap``): the ids the Keras model's vectorizer gives it, 1 ([UNK]) for an unknown one."""
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
    # the n-grams as keys; -1 for one with a word that is in no n-gram of the vocabulary
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
    ids = np.ones(total, dtype=np.int64)
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
            ids[r] = row
    return ids


@njit(cache=True, nogil=True, parallel=True)
def score_batch(
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
    row_floats,
    width,
    cap,
    mode,
    with_nb,
    pool_unknown,
):
    """Each text's sum of its known n-grams' embedding rows (each divided by its row's scale, ``row_floats[:, 0]``;
    with ``pool_unknown``, the [UNK] row too for each unknown n-gram, as a model without ``ForgetUnknown`` pools it),
    its n-gram count, its known n-gram count, (``with_nb``) its sum of the naive-Bayes weights ``row_floats[:, 1]``
    over its distinct known n-grams, and its sum of the context weights ``row_floats[:, 2]`` over its known n-gram
    positions (the context branch averages them: the caller divides by the known count). The texts are spread over
    numba's threads (prange), each
    text scored by one thread."""
    texts = len(offsets) - 1
    dim = embedding.shape[1]
    sums = np.zeros((texts, dim), dtype=np.float64)
    ngrams = np.zeros(texts, dtype=np.int32)
    known = np.zeros(texts, dtype=np.int32)
    nb_sums = np.zeros(texts, dtype=np.float64)
    ctx_sums = np.zeros(texts, dtype=np.float64)
    for t in prange(texts):
        buf, starts, ends, count = _clean(points[offsets[t] : offsets[t + 1]], kept, mode)
        ids = _ngram_ids(
            buf, starts, ends, count, w_table, w_offsets, w_points, w_mask, unknown, base, g_table, g_shift, g_mask,
            width, cap,
        )  # fmt: skip
        # then the embedding rows of the known ones, summed in order, and the naive-Bayes weight of each distinct one
        # (beside its row's scale in ``row_floats``: one memory read for both)
        acc = np.zeros(dim, dtype=np.float64)
        hits = 0
        seen, bits = _id_set(len(ids) if with_nb else 0)
        nb_total = 0.0
        ctx_total = 0.0
        for r in range(len(ids)):
            row = ids[r]
            if row >= 2:
                hits += 1
                ctx_total += row_floats[row, 2]
            elif not pool_unknown:
                continue
            scale = row_floats[row, 0]
            for d in range(dim):
                acc[d] += np.float32(embedding[row, d]) / scale  # as Keras dequantizes: in float32
            if with_nb and row >= 2 and _first_time(seen, bits, row):
                nb_total += row_floats[row, 1]
        sums[t] = acc
        known[t] = hits
        ngrams[t] = len(ids)
        nb_sums[t] = nb_total
        ctx_sums[t] = ctx_total
    return sums, ngrams, known, nb_sums, ctx_sums


@njit(cache=True, inline="always")
def _id_set(ids):
    """An empty open-addressing set for up to ``ids`` ids (load factor at most a half), and its size in bits."""
    bits = 4
    while (1 << bits) < 2 * ids:
        bits += 1
    return np.full(1 << bits, -1, dtype=np.int32), bits  # vocabulary rows fit in 31 bits


@njit(cache=True, inline="always")
def _first_time(seen, bits, row):
    """Add ``row`` to the set ``seen``; True if it was not there (sorting a text's ids instead cost a third of the
    scoring time)."""
    mask = (1 << bits) - 1
    s = np.int64((np.uint64(row) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(64 - bits))
    while True:
        found = seen[s]
        if found == row:
            return False
        if found == -1:
            seen[s] = row
            return True
        s = (s + 1) & mask


@njit(cache=True)
def _distinct_sum(ids, weights):
    """The sum of ``weights`` over the distinct known ids (each id once, however often it occurs), as
    :func:`score_batch` adds the naive-Bayes branch up."""
    seen, bits = _id_set(len(ids))
    total = 0.0
    for r in range(len(ids)):
        if ids[r] >= 2 and _first_time(seen, bits, ids[r]):
            total += weights[ids[r]]
    return total


@njit(cache=True, nogil=True)
def vectorize_one(
    points, kept, w_table, w_offsets, w_points, w_mask, unknown, base, g_table, g_shift, g_mask, width, cap, mode
):
    """One text, from its UTF-8 bytes (as :func:`_clean` reads them): its words (code points, starts, ends) and its
    n-grams' vocabulary indices (:func:`_ngram_ids`)."""
    buf, starts, ends, count = _clean(points, kept, mode)
    ids = _ngram_ids(
        buf, starts, ends, count, w_table, w_offsets, w_points, w_mask, unknown, base, g_table, g_shift, g_mask,
        width, cap,
    )  # fmt: skip
    return buf, starts[:count].copy(), ends[:count].copy(), ids


@njit(cache=True)
def fill_word_table(points, offsets, table, mask):
    """Words 1..W (their code points one after another in ``points``) into ``table``: (FNV-1a hash, number)."""
    for w in range(len(offsets) - 1):
        h = _word_hash(points, offsets[w], offsets[w + 1])
        s = np.int64(h & np.uint64(mask))
        while table[2 * s + 1] != 0:
            s = (s + 1) & mask
        table[2 * s] = h
        table[2 * s + 1] = w + 1


@njit(cache=True)
def fill_ngram_table(keys, table, shift, mask):
    """The n-grams' keys into ``table``: (key, vocabulary index), index 2 for the first (0 and 1: padding, [UNK])."""
    for i in range(len(keys)):
        s = np.int64((np.uint64(keys[i]) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(shift))
        while table[2 * s] != -1:
            s = (s + 1) & mask
        table[2 * s] = keys[i]
        table[2 * s + 1] = i + 2
