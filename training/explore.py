"""`sentiment explore`: a data report (Markdown with PNG plots) of the IMDB splits."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from model.cleaning import clean
from training.datasets import ReviewRow, imdb_split


def _ngrams(words: list[str], n: int):
    return zip(*(words[i:] for i in range(n)))


def top_ngrams(texts: list[str], n: int, k: int = 15) -> list[tuple[str, int]]:
    counts: Counter = Counter()
    for text in texts:
        counts.update(" ".join(g) for g in _ngrams(text.split(), n))
    return counts.most_common(k)


def report(data: Path | str | None = None, out: Path | str = "runs/data-report") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[ReviewRow]] = {name: imdb_split(name, data) for name in ("train", "test")}
    lines = ["# IMDB data report", ""]
    lines += [
        "| split | reviews | positive | negative | words per review, median | mean | 95th percentile |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    words_per = {}
    for name, rows in splits.items():
        words = np.array([len(r.text.split()) for r in rows])
        words_per[name] = words
        pos = sum(r.label == 1 for r in rows)
        lines.append(
            f"| {name} | {len(rows):,} | {pos:,} | {len(rows) - pos:,} | {np.median(words):.0f} | "
            f"{words.mean():.1f} | {np.percentile(words, 95):.0f} |"
        )
    train = splits["train"]
    ratio = len(train) / float(np.median(words_per["train"]))
    lines += [
        "",
        f"**Samples / words-per-sample ratio** (train): {len(train):,} / {np.median(words_per['train']):.0f} = "
        f"**{ratio:.0f}**. Below about 1,500, bags of n-grams beat sequence models (Google's text classification "
        "guide), which is why the model pools n-gram embeddings rather than reading word order.",
        "",
    ]

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.hist([words_per["train"], words_per["test"]], bins=60, range=(0, 1200), label=["train", "test"])
    ax.set_xlabel("words per review")
    ax.set_ylabel("reviews")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "words_per_review.png", dpi=100)
    plt.close(fig)
    lines += ["![words per review](words_per_review.png)", ""]

    cleaned = clean([r.text for r in train])
    by_class = {label: [t for t, r in zip(cleaned, train) if r.label == label] for label in (1, 0)}
    for n, title in ((1, "unigrams"), (2, "bigrams")):
        pos, neg = top_ngrams(by_class[1], n), top_ngrams(by_class[0], n)
        lines += [
            f"## Most frequent {title} per class (train, after cleaning)",
            "",
            "| positive | count | negative | count |",
            "|---|---:|---|---:|",
        ]
        lines += [f"| {p} | {pc:,} | {q} | {qc:,} |" for (p, pc), (q, qc) in zip(pos, neg)]
        lines.append("")
    negations = Counter()
    for text in cleaned:
        negations.update(w for w in text.split() if w in ("not", "no", "never", "nothing", "nor"))
    lines += [
        "Negations kept by cleaning (train): " + ", ".join(f"`{w}` {c:,}" for w, c in negations.most_common()),
        "",
    ]
    path = out / "data_report.md"
    path.write_text("\n".join(lines))
    print(f"wrote {path}")
    return path
