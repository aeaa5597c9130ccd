"""Texts the project wrote itself: its sample reviews (the demo without the IMDB data, the tests) and hostile texts;
together, the texts the compiled scorer is checked on against TensorFlow before its tables are kept."""

from __future__ import annotations

import json
from pathlib import Path

SAMPLE_REVIEWS = Path(__file__).resolve().parent / "sample_reviews.jsonl"


def sample_texts() -> list[str]:
    """The texts of the sample reviews."""
    return [json.loads(line)["text"] for line in SAMPLE_REVIEWS.read_text().splitlines() if line.strip()]


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
        *unknown_and_long_texts(),
        *punctuation_texts(),
    ]


def unknown_and_long_texts() -> list[str]:
    """Reviews with words no vocabulary holds (a model trained with ``mask_unknown = false`` pools each as the [UNK]
    vector), in every share from none to all; and reviews past any sequence length a config may set (the vectorizer
    keeps all unigrams, then bigrams, then trigrams, then cuts), with unknown words at the start, middle and end."""
    made_up = ["zqxwv", "blorptastic", "flummoxication", "xkcdz", "qwertyish", "snorfle"]
    review = "This film was a great surprise, the acting is superb and the story moving. I loved it."
    words = review.split()
    return [
        " ".join(made_up),
        " ".join(made_up[:2] + words + made_up[2:]),
        " ".join(w if i % 3 else made_up[i % len(made_up)] for i, w in enumerate(words)),
        "Terrible zqxwv. Boring blorptastic plot, awful acting!",
        " ".join((words + made_up) * 60),  # ~1,900 words: past most sequence lengths
        " ".join(f"{w} {made_up[i % 6]}{i}" for i, w in enumerate(words * 700)),  # ~23,000 words, half unknown
        ("bad " * 5 + "zqxwv " * 5) * 1001,  # 10,010 words: past the largest sequence length (10,000)
    ]


def punctuation_texts() -> list[str]:
    """Every punctuation and separator class in words: each character of ASCII punctuation between letters (Keras'
    ``lower_and_strip_punctuation`` removes it, so "a.b" is one word; ``clean_text`` splits there), Unicode
    punctuation (Pc, Pd, Ps, Pe, Pi, Pf, Po), symbols (Sm, Sc, Sk, So), spaces (Zs, Zl, Zp), the ASCII controls
    (\v and \x1c-\x1f, which some splits take for spaces), and NUL (Keras' cleaning reads past it)."""
    ascii_punctuation = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
    unicode_punctuation = "‿⁀_–—‐(（[{)）]}«‹“‘»›”’¡¿。、·†‡§¶※‰"
    symbols = "+±×÷<=>¬∞$€£¥¢^`´¨˜©®°™♥★☺→"
    spaces = "\u00a0\u1680\u2000\u2003\u2009\u200a\u202f\u205f\u3000\u2028\u2029\x85"
    controls = "".join(chr(c) for c in (*range(1, 32), 127))
    return [
        " ".join(f"great{c}film" for c in ascii_punctuation),
        "".join(f"Bad{c}" for c in ascii_punctuation) + "MOVIE",
        " ".join(f"good{c}story" for c in unicode_punctuation + symbols),
        "".join(f"dull{c}" for c in spaces + controls) + "END",
        "It's GREAT... really!!! (10/10) -- don't miss it; \"a must-see\" #1 @home 50% off & more: a+b=c ~~ [ok] {yes}",
        "great\x00film but the rest after the NUL is awful bad terrible",
    ]


def check_texts() -> list[str]:
    """What the compiled scorer must score as TensorFlow does: the sample reviews and the hostile texts."""
    return sample_texts() + hostile_texts()
