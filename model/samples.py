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
    ]


def check_texts() -> list[str]:
    """What the compiled scorer must score as TensorFlow does: the sample reviews and the hostile texts."""
    return sample_texts() + hostile_texts()
